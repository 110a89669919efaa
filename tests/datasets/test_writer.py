"""UnitWriter: atomic units, stats files as done markers, resumable reruns, manifest and file metadata."""

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.datasets import layout
from instvl.datasets.manifest import (
    StatsFileError,
    UnitStats,
    list_shards,
    read_manifest,
    read_unit_stats,
    sha256_file,
    unit_done,
    write_manifest,
)
from instvl.datasets.reader import ShardReader, read_table
from instvl.datasets.schema import METADATA_CONFIG_KEY, METADATA_VERSION_KEY, SCHEMA_VERSION
from instvl.datasets.validate import validate_dataset
from instvl.datasets.writer import UnitWriter

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from instvl.datasets import layout, writer
    from instvl.datasets.records import Instance, Sample, Trajectory

    root, stage = sys.argv[1], sys.argv[2]
    if stage == "before-stats":
        real = layout.atomic_write_bytes
        def die_on_stats(path, data):
            if path.name.endswith(".stats.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        layout.atomic_write_bytes = die_on_stats
    with writer.UnitWriter(root, "shard-00000", row_group_rows=1) as unit:
        for i in range(6):
            traj = Trajectory([0], [[0.0, 0.0, 0.5, 0.5]])
            unit.write(Sample(f"k-{i}", "image", 8, 8, 1, "a caption", [Instance(0, "cat", "a cat", traj)]))
            if stage == "mid-shard" and i == 3:  # three row groups are on disk, the fourth is buffered
                os.kill(os.getpid(), signal.SIGKILL)
""")


def run_killed_writer(root: Path, stage: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root), stage], capture_output=True,
                          text=True,
                          timeout=120, check=False)


def visible_parquet(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.parquet") if not p.name.startswith(".")]


def test_writer_killed_mid_shard_leaves_nothing_visible_and_rerun_completes(tmp_path, sample_factory):
    root = tmp_path / "ds"
    result = run_killed_writer(root, "mid-shard")
    assert result.returncode == -signal.SIGKILL, result.stderr
    leftovers = list((root / "shards").iterdir())
    assert leftovers and all(p.name.startswith(layout.TMP_PREFIX) for p in leftovers)
    assert visible_parquet(root) == [] and not unit_done(root, "shard-00000")
    assert list_shards(root) == [] and list(ShardReader(root).iter_rows()) == []
    assert validate_dataset(root).rules("warning") == {"temp_file"}

    with UnitWriter(root, "shard-00000", row_group_rows=1) as writer:
        for i in range(3):
            writer.write(sample_factory(i))
    write_manifest(root)
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["shard-00000-000.parquet"]
    assert sorted(p.name for p in (root / "stats").iterdir()) == ["shard-00000.stats.json"]
    report = validate_dataset(root)
    assert report.ok and report.violations == [] and report.rows == 3


def test_writer_killed_before_stats_is_not_done(tmp_path):
    root = tmp_path / "ds"
    assert run_killed_writer(root, "before-stats").returncode == -signal.SIGKILL
    assert not unit_done(root, "shard-00000")
    assert len(visible_parquet(root)) == 1  # renamed into place, but no done marker: readers ignore it
    assert list(ShardReader(root).iter_rows()) == []
    assert validate_dataset(root).rules("warning") == {"orphan_shard"}


def test_exception_inside_with_leaves_nothing(tmp_path, sample_factory):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"), \
            UnitWriter(root, "shard-00000", row_group_rows=1) as writer:
        for i in range(3):
            writer.write(sample_factory(i))
        raise RuntimeError("boom")
    assert list((root / "shards").iterdir()) == []
    assert not unit_done(root, "shard-00000") and writer.stats is None


def test_stats_manifest_and_metadata(make_dataset):
    root = make_dataset(units=2, per_unit=5, row_group_rows=2, quarantine=2)
    stats = UnitStats.read(layout.stats_path(root, "shard-00001"))
    (shard,) = stats.shards
    assert (stats.rows, stats.instances, stats.quarantined, stats.sources) == (5, 10, 2, None)
    assert shard.row_groups == 3 and shard.sha256 == sha256_file(root / shard.path)
    assert read_unit_stats(root)[1] == stats
    manifest = read_manifest(root)
    assert (manifest["num_rows"], manifest["num_shards"], manifest["num_quarantined"]) == (10, 2, 4)
    assert manifest["schema_version"] == SCHEMA_VERSION
    metadata = pq.read_schema(root / shard.path).metadata
    assert metadata[METADATA_VERSION_KEY] == SCHEMA_VERSION.encode()
    assert json.loads(metadata[METADATA_CONFIG_KEY]) == {"test": True}
    quarantine = pq.read_table(root / stats.quarantine_path).to_pylist()
    assert [q["reason"] for q in quarantine] == ["zero-length file"] * 2


def test_small_target_bytes_splits_into_parts(tmp_path, sample_factory):
    root = tmp_path / "ds"
    with UnitWriter(root, "u", target_shard_bytes=1, row_group_rows=2) as writer:
        for i in range(5):
            writer.write(sample_factory(i))
    assert [p.name for p in list_shards(root)] == ["u-000.parquet", "u-001.parquet", "u-002.parquet"]
    assert read_table(root, columns=["sample_id"]).column(0).to_pylist() == [f"s-{i:05d}" for i in range(5)]
    write_manifest(root)
    assert validate_dataset(root).ok


def test_done_unit_is_refused_unless_overwrite(make_dataset, sample_factory):
    root = make_dataset(per_unit=2)
    with pytest.raises(FileExistsError, match="shard-00000.stats.json"), UnitWriter(root, "shard-00000"):
        pass
    with UnitWriter(root, "shard-00000", overwrite=True) as writer:
        writer.write(sample_factory(9))
    write_manifest(root)
    assert read_table(root, columns=["sample_id"]).column(0).to_pylist() == ["s-00009"]


def test_duplicate_sample_and_bad_unit_id(tmp_path, sample_factory):
    with pytest.raises(ValueError, match="written twice"), UnitWriter(tmp_path, "u") as writer:
        writer.write(sample_factory(1))
        writer.write(sample_factory(1))
    with pytest.raises(ValueError, match="invalid unit id"):
        UnitWriter(tmp_path, "../escape")


def test_unit_stats_round_trip_and_name_the_file_that_lacks_a_key(tmp_path, sample_factory):
    with UnitWriter(tmp_path, "u", sources=3) as writer:
        writer.write(sample_factory(0))
    path = layout.stats_path(tmp_path, "u")
    stats = UnitStats.read(path)
    assert stats == writer.stats and stats.sources == 3 and stats.rows == 1
    assert UnitStats.from_json({**stats.to_json(), "added_later": 1}, path) == stats  # newer keys are ignored
    without_rows = {k: v for k, v in stats.to_json().items() if k != "rows"}
    with pytest.raises(StatsFileError, match=r"u\.stats\.json: stats file lacks rows"):
        UnitStats.from_json(without_rows, path)
    broken_shard = {**stats.to_json(), "shards": [{"path": "shards/u-000.parquet"}]}
    with pytest.raises(StatsFileError, match="u.stats.json: a shard entry lacks"):
        UnitStats.from_json(broken_shard, path)
    path.write_text("[1, 2]")
    with pytest.raises(StatsFileError, match="u.stats.json"):
        UnitStats.read(path)


def test_a_row_arrow_cannot_encode_is_quarantined_and_the_rest_kept(tmp_path, sample_factory):
    root = tmp_path / "ds"
    with UnitWriter(root, "u", row_group_rows=8) as writer:
        for i in range(4):
            row = sample_factory(i).to_row()
            if i == 2:
                row["global_caption"] = "bad \udce9 caption"  # a lone surrogate: not encodable as UTF-8
            writer.write(row)
    stats = writer.stats
    assert stats is not None and (stats.rows, stats.quarantined) == (3, 1)
    assert read_table(root, columns=["sample_id"]).column(0).to_pylist() == ["s-00000", "s-00001", "s-00003"]
    (row,) = pq.read_table(root / stats.quarantine_path).to_pylist()
    assert (row["sample_id"], row["stage"]) == ("s-00002", "write")
    assert row["reason"].startswith("row not writable: ")
    write_manifest(root)
    assert validate_dataset(root).ok


def test_page_checksums_turn_flipped_bits_into_errors(tmp_path, sample_factory):
    root = tmp_path / "ds"
    with UnitWriter(root, "u", row_group_rows=4) as writer:
        for i in range(8):
            writer.write(sample_factory(i))
    shard = root / writer.stats.shards[0].path
    expected = read_table(root).to_pylist()
    original = shard.read_bytes()
    start, end = 8, len(original) - pq.read_metadata(shard).serialized_size - 8  # the data pages
    silent = 0
    for position in range(start, end, max(1, (end - start) // 60)):
        data = bytearray(original)
        data[position] ^= 0x10
        shard.write_bytes(bytes(data))
        with contextlib.suppress(OSError, ValueError):  # detected: a checksum error or a corrupt page
            silent += read_table(root).to_pylist() != expected
    assert silent == 0


def test_damaged_stats_file_means_the_unit_is_redone(make_dataset, sample_factory):
    root = make_dataset(units=2, per_unit=2)
    path = layout.stats_path(root, "shard-00001")
    path.write_text(path.read_text()[:40])  # truncated
    assert not unit_done(root, "shard-00001") and unit_done(root, "shard-00000")
    assert [s.unit_id for s in read_unit_stats(root)] == ["shard-00000"]
    write_manifest(root)  # a damaged stats file no longer breaks every later manifest
    with UnitWriter(root, "shard-00001") as writer:
        writer.write(sample_factory(7))
    assert unit_done(root, "shard-00001")
    write_manifest(root)
    assert validate_dataset(root).ok


def test_stats_whose_shard_vanished_is_not_done(make_dataset):
    root = make_dataset(units=1, per_unit=2)
    (root / UnitStats.read(layout.stats_path(root, "shard-00000")).shards[0].path).unlink()
    assert not unit_done(root, "shard-00000")


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from instvl.datasets.writer import UnitWriter, lock_root
    root, what = sys.argv[1], sys.argv[2]
    with (lock_root(root) if what == "root" else UnitWriter(root, "u")):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("what", ["root", "unit"])
def test_a_second_writer_is_refused_while_another_process_holds_the_lock(tmp_path, what, sample_factory):
    from instvl.datasets.writer import RootBusyError, lock_root

    root = tmp_path / "ds"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), what], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = lock_root(root) if what == "root" else UnitWriter(root, "u")
        with pytest.raises(RootBusyError, match=rf"pid {holder.pid} on .* since "), second:
            pass
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: no stale lock to clean up
    with UnitWriter(root, "u") as writer:
        writer.write(sample_factory(0))
    with lock_root(root):
        pass
