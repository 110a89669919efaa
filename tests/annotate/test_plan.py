"""The build plan: files partitioned into stable units, extended on reruns, duplicates and bad plans."""

import json
import shutil
from pathlib import Path

import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import (
    PlanError,
    find_duplicates,
    load_plan,
    make_plan,
    plan_config_hash,
    plan_or_report,
    require_plan,
)
from instvl.datasets.layout import PLAN_BACKUP, PLAN_FILE


@pytest.fixture
def media_dir(tmp_path, make_video) -> Path:
    """Five distinct small MP4s in tmp_path/media."""
    (tmp_path / "media").mkdir()
    for i in range(5):
        make_video(f"media/clip{i}.mp4", num_frames=4, seed=i)
    return tmp_path / "media"


@pytest.fixture
def plan_config(tmp_path):
    def make(input_dir: Path, per_unit: int = 2) -> AnnotateConfig:
        return AnnotateConfig.model_validate({"input": str(input_dir), "output": str(tmp_path / "out"),
                                              "out": {"sources_per_unit": per_unit}})
    return make


def test_files_are_split_into_units_and_saved(media_dir, plan_config, tmp_path):
    plan = make_plan(plan_config(media_dir))
    assert [u.unit_id for u in plan.units] == ["unit-00000", "unit-00001", "unit-00002"]
    assert [len(u.sources) for u in plan.units] == [2, 2, 1]
    assert [Path(s).name for u in plan.units for s in u.sources] == [f"clip{i}.mp4" for i in range(5)]
    assert plan.num_sources == 5 and plan.unit("unit-00001").sources == plan.units[1].sources
    assert load_plan(tmp_path / "out") == plan
    with pytest.raises(KeyError, match="unit-00009"):
        plan.unit("unit-00009")


def test_rerun_keeps_units_and_new_files_get_new_units(media_dir, plan_config, make_video, tmp_path):
    first = make_plan(plan_config(media_dir))
    saved = (tmp_path / "out" / PLAN_FILE).read_bytes()
    assert make_plan(plan_config(media_dir, per_unit=4)) == first  # a planned file never moves
    assert (tmp_path / "out" / PLAN_FILE).read_bytes() == saved
    make_video("media/aaa-new.mp4", num_frames=4, seed=9)  # sorts first, still goes last
    extended = make_plan(plan_config(media_dir))
    assert extended.units[:3] == first.units
    assert [Path(s).name for s in extended.units[3].sources] == ["aaa-new.mp4"]


def test_identical_files_are_planned_as_duplicates(media_dir, plan_config):
    shutil.copy(media_dir / "clip1.mp4", media_dir / "copy-of-1.mp4")
    plan = make_plan(plan_config(media_dir, per_unit=10))
    (unit,) = plan.units
    # the first in order is the original
    assert unit.duplicates == {str(media_dir / "copy-of-1.mp4"): str(media_dir / "clip1.mp4")}
    assert find_duplicates([str(media_dir / f"clip{i}.mp4") for i in range(5)]) == {}


def test_missing_or_empty_input_is_a_plan_error(plan_config, tmp_path):
    with pytest.raises(PlanError, match="no-such-dir"):
        make_plan(plan_config(tmp_path / "no-such-dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlanError, match="no media files"):
        make_plan(plan_config(tmp_path / "empty"))
    with pytest.raises(PlanError, match="input"):
        make_plan(AnnotateConfig())


def test_plan_or_report_prints_why_there_is_nothing_to_build(plan_config, media_dir, tmp_path, capsys):
    assert plan_or_report(plan_config(tmp_path / "no-such-dir"), "instvl x") is None
    assert capsys.readouterr().err.startswith("instvl x: nothing to annotate in ")
    assert plan_or_report(plan_config(media_dir), "instvl x") == load_plan(tmp_path / "out")


def test_require_plan_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / PLAN_FILE}: no build plan"):
        require_plan(tmp_path)


def test_damaged_plan_is_restored_from_its_backup(media_dir, plan_config, tmp_path):
    first = make_plan(plan_config(media_dir))
    path = tmp_path / "out" / PLAN_FILE
    path.write_text("{not json")
    assert load_plan(tmp_path / "out") == first
    assert make_plan(plan_config(media_dir)) == first


def test_corrupt_plan_without_backup_names_the_file(media_dir, plan_config, tmp_path):
    make_plan(plan_config(media_dir))
    path = tmp_path / "out" / PLAN_FILE
    (tmp_path / "out" / PLAN_BACKUP).write_text("")
    path.write_text("{not json")
    with pytest.raises(PlanError, match=f"{path}: not a valid build plan"):
        make_plan(plan_config(media_dir))
    path.write_text(json.dumps({"units": []}))
    with pytest.raises(PlanError, match="KeyError"):
        load_plan(tmp_path / "out")


def test_rerun_with_another_config_is_refused_unless_a_new_version(media_dir, plan_config, tmp_path):
    cfg = plan_config(media_dir)
    plan = make_plan(cfg)
    assert plan.config_hash == plan_config_hash(cfg)
    (tmp_path / "out" / "stats").mkdir()
    (tmp_path / "out" / "stats" / "unit-00000.stats.json").write_text("{}")
    # where the files are and how they are grouped change no row
    assert make_plan(plan_config(media_dir, per_unit=4)) == plan
    changed = cfg.model_copy(update={"filter": cfg.filter.model_copy(update={"min_instances": 2})})
    with pytest.raises(PlanError, match=r"planned with annotation config .* \(flow\.new_version=true\)"):
        make_plan(changed)
    assert make_plan(changed, new_version=True).config_hash == plan_config_hash(changed) != plan.config_hash
    assert not (tmp_path / "out" / "stats" / "unit-00000.stats.json").exists()  # every unit is redone
    assert load_plan(tmp_path / "out").units == plan.units


def test_lost_plan_with_finished_units_is_refused(media_dir, plan_config, tmp_path):
    make_plan(plan_config(media_dir))
    (tmp_path / "out" / PLAN_FILE).unlink()
    (tmp_path / "out" / PLAN_BACKUP).unlink()
    (tmp_path / "out" / "stats").mkdir()
    (tmp_path / "out" / "stats" / "unit-00000.stats.json").write_text("{}")
    with pytest.raises(PlanError, match="missing, but 1 units are finished"):
        make_plan(plan_config(media_dir))
