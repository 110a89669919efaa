"""The validator reports each rule it claims, and only that rule, on a dataset with one defect."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.datasets import layout
from instvl.datasets.invariants import ROW_RULES
from instvl.datasets.manifest import sha256_file, write_manifest
from instvl.datasets.validate import RULES, ValidateConfig, main, validate_dataset


def _traj(row: dict, k: int = 0) -> dict:
    return row["instances"][k]["trajectory"]


def _set(field: str, value):
    def mutate(row: dict) -> None:
        row[field] = value
    return mutate


def _swap_frames(row: dict) -> None:
    frames = _traj(row)["frame_index"]
    frames[2], frames[3] = frames[3], frames[2]


def _set_box(box: list[float]):
    def mutate(row: dict) -> None:
        _traj(row)["box"][0] = box
    return mutate


ROW_CASES = {
    "media_type": (_set("media_type", "audio"), {}),
    "size": (_set("width", 0), {}),
    "fps": (_set("fps", 0.0), {}),
    "num_frames": (_set("num_frames", 0), {}),
    "global_caption": (_set("global_caption", "  "), {}),
    "qc_status": (lambda row: row["qc"].update(status="maybe"), {}),
    "split": (_set("split", "holdout"), {}),
    "instance_id_unique": (lambda row: row["instances"][1].update(instance_id=0), {}),
    "instance_caption": (lambda row: row["instances"][1].update(caption=""), {}),
    "list_lengths": (lambda row: _traj(row).update(score=[0.5]), {}),
    "frame_range": (lambda row: _traj(row)["frame_index"].__setitem__(-1, 8), {}),
    "frame_order": (_swap_frames, {}),
    "image_frames": (lambda row: _traj(row).update(frame_index=[1]), {"media_type": "image"}),
    "box_range": (_set_box([-0.1, 0.1, 0.3, 0.3]), {}),
    "box_order": (_set_box([0.5, 0.1, 0.2, 0.3]), {}),
    "mask_size": (lambda row: _set_masks(row, row["height"], row["width"] + 1), {}),
}


def _set_masks(row: dict, height: int, width: int) -> None:
    """Masks on every frame of the first instance, encoded at height x width."""
    import numpy as np

    from instvl.datasets.records import encode_rle

    mask = np.zeros((height, width), bool)
    mask[height // 4:height // 2, width // 4:width // 2] = True
    _traj(row)["mask_rle"] = [encode_rle(mask)] * len(_traj(row)["frame_index"])


def test_every_row_rule_has_a_case():
    assert set(ROW_CASES) == set(ROW_RULES)


def test_clean_dataset_passes(make_dataset):
    root = make_dataset(units=2, per_unit=3, quarantine=1)
    report = validate_dataset(root)
    assert report.ok, [str(v) for v in report.violations]
    assert (report.shards, report.rows, report.instances) == (2, 6, 12)
    assert report.violations == []


@pytest.mark.parametrize("rule", sorted(ROW_CASES))
def test_row_rule_reported_alone(make_dataset, rule):
    corrupt, sample_kwargs = ROW_CASES[rule]
    root = make_dataset(per_unit=3, mutate=lambda i, row: corrupt(row) if i == 1 else None, **sample_kwargs)
    report = validate_dataset(root)
    assert report.rules() == {rule}, [str(v) for v in report.violations]
    assert all(v.sample_id == "s-00001" for v in report.errors)


def test_message_names_file_sample_instance_and_problem(make_dataset):
    root = make_dataset(per_unit=3,
                        mutate=lambda i, row: _set_box([0.5, 0.1, 0.2, 0.3])(row) if i == 2 else None)
    (violation,) = validate_dataset(root).errors
    assert (violation.path, violation.sample_id, violation.instance_id) == ("shards/shard-00000-000.parquet",
                                                                            "s-00002", 0)
    text = str(violation)
    assert text.startswith("shards/shard-00000-000.parquet: sample s-00002 instance 0: frame 0: ")
    assert "box [0.5, 0.1, 0.2, 0.3] has x0 > x1" in text


def test_duplicate_sample_id_across_units(make_dataset):
    root = make_dataset(units=2, per_unit=2,
                        mutate=lambda i, row: row.update(sample_id="s-00000") if i == 2 else None)
    report = validate_dataset(root)
    assert report.rules() == {"sample_id_unique"}
    assert "shards/shard-00000-000.parquet" in report.errors[0].message


def _shard(root: Path) -> Path:
    return root / "shards" / "shard-00000-000.parquet"


def _refresh_checksums(root: Path) -> None:
    """Make the stats file and manifest agree with the shard bytes again (isolates a non-checksum rule)."""
    stats_file = layout.stats_path(root, "shard-00000")
    stats = json.loads(stats_file.read_text())
    stats["shards"][0]["sha256"] = sha256_file(_shard(root))
    stats["shards"][0]["bytes"] = _shard(root).stat().st_size
    stats_file.write_text(json.dumps(stats))
    write_manifest(root)


def _rewrite_shard(root: Path, change) -> None:
    table = change(pq.read_table(_shard(root)))
    pq.write_table(table, _shard(root))
    _refresh_checksums(root)


def _edit_stats(root: Path, **changes) -> None:
    stats_file = layout.stats_path(root, "shard-00000")
    stats = json.loads(stats_file.read_text())
    stats["shards"][0].update(changes)
    stats_file.write_text(json.dumps(stats))
    write_manifest(root)


def _garbage_shard(root: Path) -> None:
    _shard(root).write_bytes(b"PAR1 this is not parquet")
    _refresh_checksums(root)


def _edit_config_byte(root: Path) -> None:
    # a byte inside the footer's config JSON: the file still reads, only its checksum changes
    data = _shard(root).read_bytes()
    assert data.count(b'"test": true') == 1
    _shard(root).write_bytes(data.replace(b'"test": true', b'"tesT": true'))


def _plan_with_a_failed_unit(root: Path) -> None:
    units = [{"unit_id": unit_id, "sources": []} for unit_id in ("shard-00000", "shard-00001")]
    (root / layout.PLAN_FILE).write_text(json.dumps({"input": "media", "units": units}))


def _edit_manifest(root: Path, **changes) -> None:
    manifest = json.loads((root / layout.MANIFEST).read_text())
    manifest.update(changes)
    (root / layout.MANIFEST).write_text(json.dumps(manifest))


FILE_CASES = {
    "checksum": _edit_config_byte,
    "failed_unit": _plan_with_a_failed_unit,
    "row_count": lambda root: _edit_stats(root, rows=99),
    "schema": lambda root: _rewrite_shard(root, lambda t: t.drop_columns(["split"])),
    "schema_version": lambda root: _rewrite_shard(
        root, lambda t: t.replace_schema_metadata({b"instvl.schema_version": b"2.0"})),
    "missing_shard": lambda root: _shard(root).unlink(),
    "manifest": lambda root: (root / "manifest.json").unlink(),
    "unreadable": _garbage_shard,
    "quarantine": lambda root: (root / "quarantine" / "shard-00000.parquet").unlink(),
}


@pytest.mark.parametrize("rule", sorted(FILE_CASES))
def test_file_rule_reported_alone(make_dataset, rule):
    root = make_dataset(per_unit=3, quarantine=1)
    FILE_CASES[rule](root)
    report = validate_dataset(root)
    assert report.rules() == {rule}, [str(v) for v in report.violations]


def test_edited_manifest_totals_are_row_count_errors(make_dataset):
    root = make_dataset(units=2, per_unit=3)
    _edit_manifest(root, num_rows=7)
    assert {str(v) for v in validate_dataset(root).errors} == {
        "manifest.json: num_rows is 7, the stats files hold 6 [row_count]"}
    manifest = json.loads((root / layout.MANIFEST).read_text())
    manifest["units"][1]["rows"] = 4
    _edit_manifest(root, num_rows=6, units=manifest["units"])
    assert {str(v) for v in validate_dataset(root).errors} == {
        "manifest.json: unit shard-00001: 4 rows, its stats file says 3 [row_count]"}


def test_flipped_byte_is_a_checksum_error(make_dataset):
    root = make_dataset(per_unit=3)
    data = bytearray(_shard(root).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _shard(root).write_bytes(bytes(data))
    report = validate_dataset(root)
    assert "checksum" in report.rules()
    where = {str(v).split(":")[0] for v in report.errors if v.rule == "checksum"}
    assert where == {"shards/shard-00000-000.parquet"}


def test_unreadable_stats_file(make_dataset):
    root = make_dataset(per_unit=2)
    layout.stats_path(root, "shard-00000").write_text("{not json")
    report = validate_dataset(root)
    assert "stats" in report.rules()
    assert "orphan_shard" in report.rules("warning")


def test_stats_file_without_a_key_names_the_key(make_dataset):
    root = make_dataset(per_unit=2)
    stats_file = layout.stats_path(root, "shard-00000")
    stats = json.loads(stats_file.read_text())
    del stats["config_hash"]
    stats_file.write_text(json.dumps(stats))
    (violation,) = [v for v in validate_dataset(root).errors if v.rule == "stats"]
    assert "shard-00000.stats.json: stats file lacks config_hash" in violation.message


def test_leftover_temp_file_is_a_warning(make_dataset):
    root = make_dataset(per_unit=2)
    (root / "shards" / f"{layout.TMP_PREFIX}123-shard-00001-000.parquet").write_bytes(b"partial")
    report = validate_dataset(root)
    assert report.ok
    assert report.rules("warning") == {"temp_file"}


def test_not_a_dataset(tmp_path):
    report = validate_dataset(tmp_path)
    assert report.rules() == {"layout"}


def test_media_check(make_dataset):
    root = make_dataset(per_unit=2, with_media=True)
    assert validate_dataset(root, check_media=True).ok
    bad = make_dataset(per_unit=2, with_media=True,
                       mutate=lambda i, row: row.update(width=32) if i == 0 else None)
    report = validate_dataset(bad, check_media=True)
    assert report.rules() == {"media"}
    assert "first frame is 64x48 but the row says 32x48" in report.errors[0].message


def test_media_check_on_images_and_broken_bytes(make_dataset):
    root = make_dataset(per_unit=2, with_media=True, media_type="image")
    assert validate_dataset(root, check_media=True).ok
    bad = make_dataset(per_unit=2, with_media=True,
                       mutate=lambda i, row: row.update(media=b"junk") if i == 1 else None)
    assert validate_dataset(bad, check_media=True).rules() == {"media"}


def test_max_errors_caps_the_list_but_counts_all(make_dataset):
    root = make_dataset(per_unit=4, mutate=lambda i, row: row.update(split="nope"))
    report = validate_dataset(root, max_errors=2)
    assert len(report.violations) == 2 and report.num_errors == 4


def test_main_prints_summary_and_exit_code(make_dataset, capsys):
    good = make_dataset(per_unit=2)
    assert main(ValidateConfig(root=str(good))) == 0
    assert "OK" in capsys.readouterr().out
    bad = make_dataset(per_unit=2, mutate=lambda i, row: row.update(global_caption=""))
    assert main(ValidateConfig(root=str(bad))) == 1
    out = capsys.readouterr().out
    assert re.search(r"error global_caption\s+2\n", out)
    assert "ERROR: shards/shard-00000-000.parquet: sample s-00000: global caption is empty" in out


def test_rules_are_documented():
    assert all(RULES.values()) and "checksum" in RULES and "box_order" in RULES


def test_streams_without_media_column(make_dataset, monkeypatch):
    root = make_dataset(per_unit=2, with_media=True)
    seen = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert validate_dataset(root).ok
    assert seen and all("media" not in cols for cols in seen)


def test_a_1_0_shard_is_valid_and_its_misfit_masks_are_named(make_dataset):
    """A 1.0 shard (masks at the annotation frames, which were the stored size) still validates; a row whose
    masks were encoded one pixel wider than its H.264-even media is reported with the file."""
    def masks(i: int, row: dict) -> None:
        _set_masks(row, row["height"], row["width"] + (i == 1))

    root = make_dataset(per_unit=3, mutate=masks)
    _rewrite_shard(root, lambda table: table.replace_schema_metadata({b"instvl.schema_version": b"1.0"}))
    report = validate_dataset(root)
    assert report.rules() == {"mask_size"}, [str(v) for v in report.violations]
    (violation,) = report.errors
    assert (violation.path, violation.sample_id) == ("shards/shard-00000-000.parquet", "s-00001")
    assert "do not cover the row's 64x48 pixels" in str(violation)
