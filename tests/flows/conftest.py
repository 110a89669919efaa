"""Fixtures of the flow tests: media and config factories, and a clean environment after each build.

The Prefect home, log routing and the session's test server (`prefect_harness`) come from the
`instvl.testing.fixtures` plugin.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from instvl.config import load_config
from instvl.flows.config import BuildConfig


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """The build exports PREFECT_API_URL for its workers; keep that from leaking into the next test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def synth_media(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: a folder of InstVL-Synth MP4s and JPEGs (raw format); cached per argument set."""
    from instvl.datasets.synth import SynthConfig, generate

    made: dict[tuple, Path] = {}

    def make(num_samples: int = 6, image_fraction: float = 0.4, seed: int = 0, num_frames: int = 8) -> Path:
        key = (num_samples, image_fraction, seed, num_frames)
        if key not in made:
            root = tmp_path_factory.mktemp("synth")
            generate(SynthConfig(output=str(root), format="raw", num_samples=num_samples, seed=seed,
                                 image_fraction=image_fraction, num_frames=num_frames, max_objects=3))
            made[key] = root / "media"
        return made[key]

    return make


@pytest.fixture
def copy_media(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a private copy of a media folder that a test may add broken files to."""
    import shutil

    def copy(source: Path, name: str = "media") -> Path:
        return Path(shutil.copytree(source, tmp_path / name))

    return copy


@pytest.fixture
def make_config() -> Callable[..., BuildConfig]:
    """Factory: an annotation config from a preset plus `key=value` overrides."""

    def make(input_dir: Path, output: Path, *overrides: str, preset: str = "annotate/fake") -> BuildConfig:
        return load_config(BuildConfig, preset, ["flow.progress=false", *overrides],
                           values={"input": str(input_dir), "output": str(output)})

    return make
