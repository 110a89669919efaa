"""QA fixtures: InstVL-Synth datasets and QA configs on the session's real Label Studio server.

The server (`ls_server`, `document_root`) comes from the `instvl.testing.fixtures` plugin; tests that
need it skip when no server is installed (and fail under CI=true).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instvl.datasets.synth import SynthConfig, generate
from instvl.qa.server import LabelStudioServer
from instvl.testing.labelstudio import TOKEN_ENV


@pytest.fixture
def make_synth(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Factory: an InstVL-Synth dataset root (videos and images), outside the server's review-media root."""

    def make(name: str = "ds", num_samples: int = 6, seed: int = 5, **fields: Any) -> Path:
        root = tmp_path_factory.getbasetemp() / "datasets" / f"{request.node.name}-{name}"
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
