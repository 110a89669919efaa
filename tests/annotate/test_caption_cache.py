"""The caption cache across builds: a shared `out.cache_dir` answers a rebuild after a change that does
not touch the captioner; answer-changing settings and private caches miss."""

from pathlib import Path

import numpy as np
import pytest

from instvl.annotate import run as annotate_run
from instvl.annotate.caption import Captioner, FakeCaptioner, OpenAICaptioner
from instvl.annotate.caption_cache import CachedCaptioner, CaptionCache
from instvl.annotate.run import AnnotateRunConfig
from instvl.annotate.units import caption_cache_file, engines_for
from instvl.config import load_config
from instvl.datasets.reader import read_table
from instvl.datasets.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six InstVL-Synth clips and images as raw files, shared by the builds of this module."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(output=str(root), format="raw", num_samples=6, seed=0, image_fraction=0.4,
                         num_frames=8, max_objects=3))
    return root / "media"


def make_config(media: Path, output: Path, *overrides: str) -> AnnotateRunConfig:
    overrides = (f"input='{media}'", f"output='{output}'", *overrides)
    return load_config(AnnotateRunConfig, "annotate/fake", list(overrides))


def build(cfg) -> CachedCaptioner:
    """Builds `cfg` as `instvl annotate run` does; returns its captioner with hit counters."""
    assert annotate_run.main(cfg) == 0
    return engines_for(cfg).captioner


def global_captions(root: Path) -> dict[str, str]:
    rows = read_table(root, columns=["sample_id", "global_caption"]).to_pylist()
    return {row["sample_id"]: row["global_caption"] for row in rows}


def test_shared_cache_answers_a_rebuild_after_a_tracker_change(media, tmp_path):
    shared = tmp_path / "captions"
    first_cfg = make_config(media, tmp_path / "a", f"out.cache_dir='{shared}'")
    assert caption_cache_file(first_cfg) == shared / "captions.sqlite"
    first = build(first_cfg)
    assert first.hits == 0 and first.misses > 0
    assert len(CaptionCache(shared / "captions.sqlite")) == first.misses

    second = build(make_config(media, tmp_path / "b", f"out.cache_dir='{shared}'", "tracker.min_score=0.5"))
    assert second.hits >= 6  # at least the scene request of every sample
    assert global_captions(tmp_path / "b") == global_captions(tmp_path / "a")


def test_answer_changing_settings_and_private_caches_miss(media, tmp_path):
    shared = tmp_path / "captions"
    build(make_config(media, tmp_path / "a", f"out.cache_dir='{shared}'"))

    other_answers = build(make_config(media, tmp_path / "b", f"out.cache_dir='{shared}'",
                                      "captioner.entities=[thing]"))
    assert other_answers.hits == 0 and other_answers.misses > 0

    private_cfg = make_config(media, tmp_path / "c")  # default: OUTPUT/.cache, not shared
    private = build(private_cfg)
    assert caption_cache_file(private_cfg) == tmp_path / "c" / ".cache" / "captions.sqlite"
    assert private.hits == 0 and caption_cache_file(private_cfg).is_file()

    rerun = build(private_cfg.model_copy(update={"output": str(tmp_path / "d")}))
    assert rerun.hits == 0  # a new output has its own default cache


def test_cache_can_be_turned_off(media, tmp_path):
    cfg = make_config(media, tmp_path / "a", "out.caption_cache=false")
    assert caption_cache_file(cfg) is None
    assert not isinstance(build(cfg), CachedCaptioner)
    assert not (tmp_path / "a" / ".cache").exists()


def test_cached_captioner_is_a_captioner_that_forwards_requests_and_keys(tmp_path: Path) -> None:
    inner = FakeCaptioner.Config().build()
    cached = CachedCaptioner(inner, CaptionCache(tmp_path / "captions.sqlite"))
    assert isinstance(cached, Captioner) and cached.model_id == inner.model_id
    assert isinstance(OpenAICaptioner.Config().build(), Captioner)  # every backend is a BatchCaptioner
    frames = [np.full((32, 32, 3), 200, np.uint8)]
    request = cached.request("global", frames)
    assert cached.key(request) == inner.key(inner.request("global", frames))
    first, again = cached.caption([request]), cached.caption([request])
    assert first == again == inner.caption([request]) and (cached.hits, cached.misses) == (1, 1)
