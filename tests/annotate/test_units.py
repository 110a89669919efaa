"""One work unit: stats with its input count, skipping done units, progress files, per-process models."""

import json
import os
import shutil
from pathlib import Path

import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import make_plan
from instvl.annotate.progress import read_progress
from instvl.annotate.units import UnitsFailed, caption_cache_file, engines_for, run_unit, run_units
from instvl.config import load_config
from instvl.datasets.layout import PROGRESS_DIR, TMP_PREFIX, stats_path
from instvl.datasets.manifest import UnitStats
from instvl.testing.media import huge_png


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



@pytest.mark.parametrize("mode", ["stream", "serial"])
def test_a_failed_unit_does_not_stop_the_units_after_it(unit_config, tmp_path, make_video, mode):
    for i in range(2, 5):
        make_video(f"media/clip{i}.mp4", num_frames=6, width=64, height=48, seed=i)
    cfg = unit_config("out.sources_per_unit=2", f"engine.mode={mode}")
    units = ["unit-00000", "unit-00001", "unit-00002"]
    blocker = tmp_path / "out" / "shards" / "unit-00001-000.parquet"
    blocker.mkdir(parents=True)  # a folder where the second unit's shard must go
    with pytest.raises(UnitsFailed, match="unit-00001: IsADirectoryError") as failed:
        run_units(cfg, units)
    assert list(failed.value.failures) == ["unit-00001"]
    assert [stats_path(tmp_path / "out", u).exists() for u in units] == [True, False, True]
    assert read_progress(tmp_path / "out") == (0, 0)
    assert not list((tmp_path / "out" / "shards").glob(f"{TMP_PREFIX}*"))  # the failed unit left nothing

    blocker.rmdir()
    stats = run_units(cfg, units)  # the rerun redoes only the failed unit
    assert [s.unit_id for s in stats] == units and all(s.rows + s.quarantined == 2 for s in stats)


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


def quarantine_rows(root: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted((root / "quarantine").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]


def test_decompression_bomb_is_quarantined_and_the_unit_goes_on(unit_config, tmp_path):
    (tmp_path / "media" / "huge.png").write_bytes(huge_png())
    cfg = unit_config("out.sources_per_unit=8")
    stats = run_unit(cfg, "unit-00000")
    assert stats.rows == 2  # the two good clips (the copy is a duplicate)
    (bomb,) = [row for row in quarantine_rows(tmp_path / "out") if row["uri"].endswith("huge.png")]
    assert bomb["reason"].startswith("DecompressionBombError: ") and bomb["stage"] == "probe"


def test_non_utf8_file_name_is_annotated_with_its_bytes_escaped(unit_config, tmp_path):
    from instvl.datasets.reader import read_table

    odd = os.fsencode(tmp_path / "media") + b"/latin1-\xe9t\xe9.mp4"
    shutil.copy(tmp_path / "media" / "clip1.mp4", odd)
    (tmp_path / "media" / "clip1.mp4").unlink()  # not a duplicate of the odd one
    cfg = unit_config("out.sources_per_unit=8")
    stats = run_unit(cfg, "unit-00000")
    assert stats.rows == 2
    uris = [row["source"]["uri"] for row in read_table(tmp_path / "out", columns=["source"]).to_pylist()]
    (escaped,) = [uri for uri in uris if "latin1" in uri]
    assert escaped.endswith("latin1-\\xe9t\\xe9.mp4")
    # lossless: the escapes give back the raw bytes of the name
    assert escaped.encode().decode("unicode_escape").encode("latin-1").endswith(b"latin1-\xe9t\xe9.mp4")


def test_any_exception_while_probing_quarantines_only_that_file(unit_config, tmp_path, monkeypatch):
    from instvl.annotate import units

    real = units.probe_source

    def probe(uri, cfg, media=None):
        if uri.endswith("clip1.mp4"):  # what PyAV raised on an MP4 whose stream had no codec context
            raise AttributeError("'NoneType' object has no attribute 'codec_context'")
        return real(uri, cfg, media)

    monkeypatch.setattr(units, "probe_source", probe)
    stats = run_unit(unit_config("out.sources_per_unit=8"), "unit-00000")
    assert stats.rows == 1
    rows = quarantine_rows(tmp_path / "out")
    reasons = {Path(row["uri"]).name: (row["stage"], row["reason"]) for row in rows}
    assert reasons["clip1.mp4"] == ("probe",
                                    "AttributeError: 'NoneType' object has no attribute 'codec_context'")


def test_decoder_exception_quarantines_the_clip(unit_config, tmp_path, monkeypatch):
    from instvl.annotate import units

    def decode(spec, cfg, media):
        raise ValueError("decoder blew up")

    monkeypatch.setattr(units, "decode_clip", decode)
    stats = run_unit(unit_config("out.sources_per_unit=8"), "unit-00000")
    assert stats.rows == 0 and stats.quarantined == 3
    assert {row["stage"] for row in quarantine_rows(tmp_path / "out")} == {"decode", "dedupe"}


def test_a_full_disk_fails_the_unit_instead_of_quarantining(unit_config, tmp_path, monkeypatch):
    import errno

    from instvl.annotate import units

    def fetch(uri):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(units, "fetch_media", fetch)
    with pytest.raises(OSError, match="No space left"):
        run_unit(unit_config("out.sources_per_unit=8"), "unit-00000")
    assert not stats_path(tmp_path / "out", "unit-00000").exists()


def test_transient_errors_are_retried_then_quarantined_as_retryable(unit_config, tmp_path, monkeypatch):
    from instvl.annotate import units

    monkeypatch.setattr(units.time, "sleep", lambda s: None)
    calls: dict[str, int] = {}
    real = units.fetch_media

    def flaky(uri):
        calls[uri] = calls.get(uri, 0) + 1
        if uri.endswith("clip0.mp4") and calls[uri] < 3:
            raise ConnectionResetError(104, "Connection reset by peer")  # cured by the third attempt
        if uri.endswith("clip1.mp4"):
            raise TimeoutError("read timed out")  # never cured
        return real(uri)

    monkeypatch.setattr(units, "fetch_media", flaky)
    cfg = unit_config("out.sources_per_unit=8")
    stats = run_unit(cfg, "unit-00000")
    assert stats.rows == 1 and calls[str(tmp_path / "media" / "clip1.mp4")] == 3
    reasons = {Path(row["uri"]).name: row["reason"] for row in quarantine_rows(tmp_path / "out")}
    assert reasons["clip1.mp4"] == "retryable: TimeoutError: read timed out"
    assert not reasons["copy.mp4"].startswith("retryable")

    monkeypatch.setattr(units, "fetch_media", real)  # the network is back
    assert units.reopen_retryable_units(tmp_path / "out") == ["unit-00000"]
    assert run_unit(cfg, "unit-00000").rows == 2
    assert units.reopen_retryable_units(tmp_path / "out") == []


def test_transient_classification():
    import errno

    from instvl.annotate.units import transient

    class HTTPError(Exception):
        def __init__(self, status):
            self.status = status

    assert transient(TimeoutError()) and transient(ConnectionResetError())
    assert transient(OSError(errno.ETIMEDOUT, "timed out")) and transient(HTTPError(503))
    assert not transient(HTTPError(404)) and not transient(FileNotFoundError())
    assert not transient(ValueError())
