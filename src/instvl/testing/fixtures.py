"""pytest plugin: instvl's sample factories and real components (Prefect, Label Studio, Chromium) as fixtures.

Enable it in a project's top-level conftest.py:

    pytest_plugins = ["instvl.testing.fixtures"]

Factories: `make_video` (an MP4 of a moving square and its true boxes), `sample_factory` (`make_sample`),
`make_dataset` (a dataset root written with the real UnitWriter). Components, each skipped when absent
and failed under CI=true (`require_component`): `prefect_harness` (one Prefect test server per
session; the plugin also gives the session an isolated Prefect home before anything imports prefect),
`ls_server` with its `document_root` (one Label Studio per session), `chromium_bin`.
"""

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instvl.datasets.records import Sample
from instvl.testing.components import require_component

_PREFECT_HOME_PREFIX = "instvl-prefect-home-"


def pytest_configure(config: pytest.Config) -> None:
    """Give the session its own Prefect home and instvl's log routing before any test imports prefect."""
    if importlib.util.find_spec("prefect") is None:
        return
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=_PREFECT_HOME_PREFIX)
    os.environ.pop("PREFECT_API_URL", None)  # never talk to a developer's own server from the tests
    from instvl.flows.prefect_env import configure_environment

    configure_environment()


def pytest_unconfigure(config: pytest.Config) -> None:
    home = os.environ.get("PREFECT_HOME", "")
    if Path(home).name.startswith(_PREFECT_HOME_PREFIX):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """One Prefect test server (temporary SQLite) for the session; yields its API URL."""
    installed = importlib.util.find_spec("prefect") is not None
    require_component("Prefect", installed, "pip install 'instvl[flows]'")
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(get_current_settings().api.url)


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: write a small MP4 of a moving square under tmp_path; returns (path, true boxes (T, 4))."""
    from instvl.testing.media import moving_square, write_mp4

    def make(name: str = "clip.mp4", num_frames: int = 16, width: int = 64, height: int = 48,
             fps: float = 8, cut_at: int | None = None, seed: int = 0) -> tuple[Path, np.ndarray]:
        frames, boxes = moving_square(num_frames, width, height, cut_at=cut_at, seed=seed)
        return write_mp4(tmp_path / name, frames, fps), boxes

    return make


@pytest.fixture
def sample_factory() -> Callable[..., Sample]:
    """`instvl.testing.datasets.make_sample`: a valid sample of moving shapes."""
    from instvl.testing.datasets import make_sample

    return make_sample


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `write_dataset` into a fresh folder under tmp_path (or `root=`); returns the root."""
    from instvl.testing.datasets import write_dataset

    names = count()

    def make(*, root: Path | None = None, **kwargs: Any) -> Path:
        return write_dataset(root or tmp_path / f"ds{next(names)}", **kwargs)

    return make


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Label Studio server's local-files root: every dataset it reviews lives below it."""
    return tmp_path_factory.mktemp("qa-data")


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory, document_root: Path) -> Iterator[Any]:
    """A real Label Studio on 127.0.0.1 for the whole session (`instvl.testing.labelstudio`)."""
    from instvl.testing.labelstudio import label_studio_server

    with label_studio_server(tmp_path_factory.mktemp("ls") / "data", document_root) as server:
        yield server


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """The headless Chromium executable (`instvl.testing.browser`)."""
    from instvl.testing.browser import require_chromium

    return require_chromium()
