"""The streaming unit engine: the same rows as the serial path, one clip's fault quarantines only that clip,
held batches never wait on clips that cannot start."""

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.annotate.batching import StageStats
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.engine import StreamEngine, keyframes
from instvl.annotate.pipeline import Engines
from instvl.annotate.plan import make_plan
from instvl.annotate.units import engines_for, run_unit, run_units
from instvl.config import load_config
from instvl.datasets.synth import SynthConfig, generate
from instvl.testing.datasets import rows_by_id

VOLATILE = {"created_at", "media"}  # a timestamp, and MP4 bytes re-encoded per run (same frames)


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory) -> Path:
    """InstVL-Synth as raw media: 10 clips and stills of varied sizes and lengths."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(output=str(root), format="raw", num_samples=10, width=[64, 96], height=[64, 96],
                         num_frames=[6, 14], image_fraction=0.2, seed=5))
    return root / "media"


def build(media: Path, out: Path, preset: str, *overrides: str) -> dict[str, dict]:
    """The rows of one build into `out` (then moved aside: the config hash covers the output path, so
    both paths build into the same folder)."""
    cfg = load_config(AnnotateConfig, preset, [f"input='{media}'", f"output='{out}'",
                                               "out.sources_per_unit=64", *overrides])
    make_plan(cfg)
    run_unit(cfg, "unit-00000")
    rows = rows_by_id(out)
    shutil.move(out, out.with_name(out.name + "-" + str(len(list(out.parent.iterdir())))))
    return rows


def comparable(row: dict) -> dict:
    row = {k: v for k, v in row.items() if k not in VOLATILE}
    row["provenance"] = {k: v for k, v in (row.get("provenance") or {}).items() if k not in VOLATILE}
    return row


@pytest.mark.parametrize("preset", ["annotate/fake", "annotate/demo"])
def test_stream_engine_writes_the_rows_of_the_serial_path(synth_raw, tmp_path, preset):
    serial = build(synth_raw, tmp_path / "out", preset, "engine.mode=serial")
    stream = build(synth_raw, tmp_path / "out", preset, "engine.mode=stream", "engine.clips_in_flight=4",
                   "engine.decode_ahead=2", "engine.caption_batch=3")
    assert serial and list(stream) == list(serial)  # the same samples, written in the same order
    for sample_id, row in serial.items():
        assert comparable(stream[sample_id]) == comparable(row), sample_id
        assert (stream[sample_id]["media"] is None) == (row["media"] is None)


@pytest.mark.parametrize("held", [["engine.clips_in_flight=2"],
                                  ["engine.clips_in_flight=4", "engine.caption_hold_entities=true",
                                   "engine.caption_low_water=0", "engine.detect_low_water=0"],
                                  ["engine.clips_in_flight=4", "engine.caption_hold_entities=true",
                                   "engine.caption_waves=true", "engine.caption_low_water=0",
                                   "engine.detect_low_water=0"]])
def test_held_batches_write_the_same_rows_with_few_clip_slots(synth_raw, tmp_path, held):
    """Keyframes held for a full detector batch and captions held for a fill (entity captions too) never
    wait on clips that cannot start (every clip slot taken): the rows are the serial path's."""
    serial = build(synth_raw, tmp_path / "out", "annotate/fake", "engine.mode=serial")
    stream = build(synth_raw, tmp_path / "out", "annotate/fake", *held,
                   "engine.decode_ahead=1", "engine.detect_batch=64", "engine.detect_hold_s=3600",
                   "engine.caption_fill=64", "engine.caption_hold_s=3600", "engine.caption_batch=1",
                   "engine.caption_calls=64")
    assert serial and list(stream) == list(serial)
    assert all(comparable(stream[k]) == comparable(v) for k, v in serial.items())



def test_units_run_back_to_back_write_each_unit_as_the_serial_path_does(synth_raw, tmp_path):
    """Three units through one engine (the next unit's clips enter while the previous one finishes):
    each unit's shard holds the serial path's rows of its own files, in order."""
    def units_rows(out: Path, *overrides: str) -> dict[str, list[dict]]:
        cfg = load_config(AnnotateConfig, "annotate/fake", [f"input='{synth_raw}'", f"output='{out}'",
                                                            "out.sources_per_unit=4", *overrides])
        units = [u.unit_id for u in make_plan(cfg).units]
        stats = run_units(cfg, units)
        assert [s.unit_id for s in stats] == units == ["unit-00000", "unit-00001", "unit-00002"]
        by_unit = {s.unit_id: [r for shard in s.shards for r in pq.read_table(out / shard.path).to_pylist()]
                   for s in stats}
        shutil.move(out, out.with_name(out.name + "-" + str(len(list(out.parent.iterdir())))))
        return by_unit

    serial = units_rows(tmp_path / "out", "engine.mode=serial")
    stream = units_rows(tmp_path / "out", "engine.clips_in_flight=6", "engine.decode_ahead=2",
                        "engine.caption_batch=3")
    assert sum(map(len, serial.values())) >= 6
    for unit_id, rows in serial.items():
        assert [r["sample_id"] for r in stream[unit_id]] == [r["sample_id"] for r in rows], unit_id
        assert [comparable(r) for r in stream[unit_id]] == [comparable(r) for r in rows], unit_id


class _Decoders:
    stats = StageStats("decode")

    def close(self) -> None:
        pass


def test_keyframes_wait_for_a_full_batch_only_while_more_can_come():
    cfg = load_config(AnnotateConfig, "annotate/fake", ["engine.clips_in_flight=2"])
    with StreamEngine(Engines.build(cfg), cfg, _Decoders()) as stream:  # type: ignore[arg-type]
        assert stream._detector_needed()  # nothing decoding, no clip before its detection
        stream._unstarted = 1
        assert not stream._detector_needed()  # a clip is decoding and a slot is free for it
        stream._active = 2
        assert stream._detector_needed()  # every slot taken: it cannot start before the held ones go
        stream._unstarted, stream._undetected = 0, 1
        assert not stream._detector_needed()  # an active clip's phrases are on their way



def test_keyframes_outstay_their_hold_only_while_the_tracker_has_work():
    cfg = load_config(AnnotateConfig, "annotate/fake", ["engine.clips_in_flight=16",
                                                        "engine.detect_low_water=2"])
    with StreamEngine(Engines.build(cfg), cfg, _Decoders()) as stream:  # type: ignore[arg-type]
        stream._active = 8
        stream._waiting.update(detect=2, caption=3)
        assert stream._tracker_fed()  # 3 clips tracked or queued for it: more than 2
        stream._waiting["caption"] = 4
        assert not stream._tracker_fed()  # 2 left: the tracker runs low, held keyframes go at their hold

def test_on_one_gpu_held_captions_go_as_waves_that_start_and_end_together():
    """With `caption_waves` (one GPU for all), held captions go at the low water only while the
    captioner is idle, no clip is starting and the clip slots have filled once; once every clip is in,
    only when nothing is ahead of the tracker. Without it: at the low water, whatever else runs."""
    for one_gpu in (True, False):
        cfg = load_config(AnnotateConfig, "annotate/fake", ["engine.clips_in_flight=16",
                                                            "engine.caption_low_water=4",
                                                            "engine.caption_hold_entities=true",
                                                            f"engine.caption_waves={one_gpu}"])
        with StreamEngine(Engines.build(cfg), cfg, _Decoders()) as stream:  # type: ignore[arg-type]
            stream._active, stream._handed = 3, 15
            assert stream._captions_needed() is not one_gpu  # the run's start: more clips are entering
            stream._handed = 16
            assert stream._captions_needed()  # 3 clips ahead of the tracker: at most the low water
            stream._unstarted = 1
            assert stream._captions_needed() is not one_gpu  # a clip is starting: its entity caption joins
            stream._unstarted = 0
            stream.caption_pool._in_call["instance"] = 2
            assert stream._captions_needed() is not one_gpu  # a wave is running: the next waits for its end
            stream.caption_pool._in_call["instance"] = 0
            stream._all_in = True
            assert stream._captions_needed() is not one_gpu  # the last clips: after the tracker is done
            stream._waiting["caption"] = 3
            assert stream._captions_needed()  # nothing ahead of the tracker: they go


def test_a_clip_stops_counting_as_coming_once_its_keyframes_are_queued(synth_raw, tmp_path):
    """Every clip that became active is counted out again, by its first detect call or its end (a clip
    that is quarantined or filtered before detection included)."""
    cfg = load_config(AnnotateConfig, "annotate/fake", [f"input='{synth_raw}'", f"output='{tmp_path / 'o'}'",
                                                        "out.sources_per_unit=64"])
    make_plan(cfg)
    seen: list[int] = []
    real = StreamEngine._keyframes_queued

    def spy(self):
        real(self)
        seen.append(self._undetected)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StreamEngine, "_keyframes_queued", spy)
        run_unit(cfg, "unit-00000")
    assert seen and seen[-1] == 0 and min(seen) >= 0


def test_engine_settings_change_no_config_hash(synth_raw, tmp_path):
    a = load_config(AnnotateConfig, "annotate/fake", ["engine.clips_in_flight=3"])
    b = load_config(AnnotateConfig, "annotate/fake", ["engine.mode=serial"])
    from instvl.annotate.plan import plan_config_hash
    from instvl.config import config_hash

    assert config_hash(a.rows_config()) == config_hash(b.rows_config())
    assert plan_config_hash(a) == plan_config_hash(b)


def test_a_failing_clip_is_quarantined_alone(synth_raw, tmp_path, monkeypatch):
    """A model error on one clip, raised inside a batched call shared with other clips, quarantines that clip
    only (the batch is retried item by item)."""
    cfg = load_config(AnnotateConfig, "annotate/fake", [f"input='{synth_raw}'", f"output='{tmp_path / 'o'}'",
                                                        "out.sources_per_unit=64", "engine.caption_batch=16"])
    make_plan(cfg)
    engines = engines_for(cfg)
    real = engines.captioner.caption
    victim = sorted(synth_raw.glob("*.mp4"))[0]

    from instvl.media.decode import decode_frames
    bad = decode_frames(str(victim), str(victim), [0], max_short_side=cfg.ingest.max_short_side).frames[0]

    def caption(requests):
        if any(r.frames[0].shape == bad.shape and (r.frames[0] == bad).all() for r in requests):
            raise RuntimeError("CUDA error: an illegal memory access (one request)")
        return real(requests)

    monkeypatch.setattr(engines.captioner, "caption", caption)
    stats = run_unit(cfg, "unit-00000")
    rows = [r for p in sorted((tmp_path / "o" / "quarantine").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    assert [Path(r["uri"]).name for r in rows] == [victim.name]
    assert rows[0]["stage"] == "annotate" and "illegal memory access" in rows[0]["reason"]
    assert stats.rows == len(list(synth_raw.iterdir())) - 1


def test_keyframes_follow_the_builder_windows():
    assert list(keyframes(16, 8)) == [0, 8] and list(keyframes(17, 8)) == [0, 8, 16]
    assert list(keyframes(1, 4)) == [0]
