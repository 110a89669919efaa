"""QA fixtures: one real Label Studio server per test session, InstVL-Synth datasets and QA configs.

The server comes from .venv-labelstudio (or `label-studio` on PATH); its data dir is a copy of a
template initialised once per Label Studio version under ~/.cache/instvl (INSTVL_TEST_CACHE overrides),
so a session pays seconds, not a minute of migrations. Tests that need it skip when no server exists.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.qa.credentials import TEST_PASSWORD, TEST_TOKEN, TEST_USER, TOKEN_ENV

from instvl.datasets.synth import SynthConfig, generate
from instvl.qa.server import Credentials, LabelStudioServer, find_label_studio
from instvl.qa.settings import ServeOptions


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's local-files root: every test dataset lives below it."""
    return tmp_path_factory.mktemp("qa-data")


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory, document_root: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio on 127.0.0.1 for the whole session, stopped by PID at the end."""
    try:
        find_label_studio()
    except FileNotFoundError as err:
        pytest.skip(f"no Label Studio server executable: {err}")
    cache = os.environ.get("INSTVL_TEST_CACHE", str(Path.home() / ".cache" / "instvl"))
    options = ServeOptions(data_dir=str(tmp_path_factory.mktemp("ls") / "data"), port=None,
                           template_cache=cache, start_timeout_s=300)
    previous = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TEST_TOKEN
    server = LabelStudioServer(options, Credentials(TEST_USER, TEST_PASSWORD, TEST_TOKEN), document_root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = previous


@pytest.fixture
def make_synth(document_root: Path, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Factory: an InstVL-Synth dataset root (videos and images) below the server's document root."""

    def make(name: str = "ds", num_samples: int = 6, seed: int = 5, **fields: Any) -> Path:
        root = document_root / f"{request.node.name}-{name}"
        fields = {"image_fraction": 0.5, "num_frames": (6, 9), "fps": 8.0, **fields}
        generate(SynthConfig(output=str(root), num_samples=num_samples, seed=seed, **fields))
        return root

    return make


@pytest.fixture
def qa_settings(ls_server: LabelStudioServer, document_root: Path, request: pytest.FixtureRequest
                ) -> Callable[..., dict[str, Any]]:
    """Factory: the config sections of one test, with projects of its own on the session server."""

    def make(**sections: Any) -> dict[str, Any]:
        tag = request.node.name.replace("_", "-")[5:33]
        server = {"url": ls_server.url, "token_env": TOKEN_ENV, "document_root": str(document_root),
                  "video_project": f"{tag}-video", "image_project": f"{tag}-image", "timeout_s": 20}
        return {"server": server, **sections}

    return make
