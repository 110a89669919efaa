"""One work unit: stats with its input count, skipping done units, progress files, per-process models."""

import json
import shutil
from pathlib import Path

import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import make_plan
from instvl.annotate.progress import read_progress
from instvl.annotate.units import caption_cache_file, engines_for, run_unit
from instvl.config import load_config
from instvl.datasets.layout import PROGRESS_DIR, stats_path
from instvl.datasets.manifest import UnitStats


@pytest.fixture
def unit_config(tmp_path, make_video):
    """Factory: a fake-preset config over three small MP4s (one a byte copy), planned into units."""
    (tmp_path / "media").mkdir(exist_ok=True)
    for i in range(2):
        make_video(f"media/clip{i}.mp4", num_frames=6, width=64, height=48, seed=i)
    shutil.copy(tmp_path / "media" / "clip0.mp4", tmp_path / "media" / "copy.mp4")

    def make(*overrides: str) -> AnnotateConfig:
        cfg = load_config(AnnotateConfig, "annotate/fake", [f"input='{tmp_path / 'media'}'",
                                                           f"output='{tmp_path / 'out'}'", *overrides])
        make_plan(cfg)
        return cfg

    return make


def test_unit_stats_count_inputs_samples_and_duplicates(unit_config, tmp_path):
    cfg = unit_config("out.sources_per_unit=3")
    stats = run_unit(cfg, "unit-00000")
    assert stats.sources == 3 and stats.rows == 2 and stats.quarantined == 1
    assert UnitStats.read(stats_path(tmp_path / "out", "unit-00000")) == stats
    assert not list((tmp_path / "out" / PROGRESS_DIR).glob("*.json"))  # removed when the unit finished


def test_done_unit_is_not_redone(unit_config, tmp_path):
    cfg = unit_config("out.sources_per_unit=2")
    first = run_unit(cfg, "unit-00000")
    shard = tmp_path / "out" / first.shards[0].path
    before = shard.stat().st_mtime_ns
    assert run_unit(cfg, "unit-00000") == first
    assert shard.stat().st_mtime_ns == before


def test_unit_without_plan_names_the_missing_file(tmp_path):
    cfg = AnnotateConfig(input=str(tmp_path), output=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="plan.json"):
        run_unit(cfg, "unit-00000")


def test_failed_unit_leaves_no_progress_and_no_stats(unit_config, tmp_path):
    cfg = unit_config("out.sources_per_unit=3")
    blocker = tmp_path / "out" / "shards" / "unit-00000-000.parquet"
    blocker.mkdir(parents=True)  # a folder where the unit's shard must go
    with pytest.raises(OSError, match="unit-00000-000.parquet"):
        run_unit(cfg, "unit-00000")
    assert not stats_path(tmp_path / "out", "unit-00000").exists()
    assert read_progress(tmp_path / "out") == (0, 0)


def test_read_progress_skips_finished_units_and_temporary_files(tmp_path):
    folder = tmp_path / PROGRESS_DIR
    folder.mkdir()
    (folder / "unit-00000.json").write_text(json.dumps({"sources_done": 2, "sources": 4, "samples": 3}))
    (folder / "unit-00001.json").write_text(json.dumps({"sources_done": 4, "sources": 4, "samples": 5}))
    (folder / ".tmp-1-unit-00002.json").write_text(
        json.dumps({"sources_done": 9, "sources": 9, "samples": 9}))
    (folder / "unit-00003.json").write_text("{half")
    assert read_progress(tmp_path) == (6, 8)
    assert read_progress(tmp_path, finished={"unit-00001"}) == (2, 3)


def test_models_are_built_once_per_config_and_cache(unit_config, tmp_path):
    cfg = unit_config()
    moved = cfg.model_copy(update={"input": "elsewhere"})
    assert engines_for(cfg) is engines_for(moved)  # where the files are does not change the models
    other_out = cfg.out.model_copy(update={"cache_dir": str(tmp_path / "c")})
    other_cache = cfg.model_copy(update={"out": other_out})
    assert engines_for(other_cache) is not engines_for(cfg)
    assert caption_cache_file(other_cache) == Path(tmp_path / "c" / "captions.sqlite")
