"""The streaming unit engine: the same rows as the serial path, one clip's fault quarantines only that clip,
batches really fill, and the GPU memory plan fails at start with the numbers."""

import shutil
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.annotate.batching import Batcher
from instvl.annotate.config import AnnotateConfig, MemoryPlanConfig, ModelMemoryConfig
from instvl.annotate.engine import keyframes
from instvl.annotate.memory import MemoryPlanError, plan_memory
from instvl.annotate.plan import make_plan
from instvl.annotate.units import engines_for, memory_budget, run_unit
from instvl.config import load_config
from instvl.datasets.synth import SynthConfig, generate
from instvl.flows.config import BuildConfig
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


def test_batcher_coalesces_calls_of_many_threads_oldest_first():
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        calls.append(list(items))
        return [i * 10 for i in items]

    batcher = Batcher("t", run, max_batch=8, linger_s=0.05)
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.map([i])[0]))
               for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: i * 10 for i in range(20)}
    assert max(len(c) for c in calls) == 8 and len(calls) <= 4
    assert batcher.stats.items == 20


def test_grouped_batcher_never_mixes_keys():
    seen: list[set[str]] = []

    def run(items):
        seen.append({k for k, _ in items})
        return items

    batcher = Batcher("g", run, max_batch=8, linger_s=0.02, grouped=True)
    futures = [batcher.submit((k, i), key=k) for i in range(6) for k in "ab"]
    assert [f.result() for f in futures] == [(k, i) for i in range(6) for k in "ab"]
    batcher.close()
    assert all(len(s) == 1 for s in seen)


def test_held_items_go_in_waves_when_full_flushed_or_too_old():
    calls: list[list[int]] = []
    flush = threading.Event()

    def run(items):
        calls.append(list(items))
        return items

    batcher = Batcher("h", run, max_batch=1, linger_s=0.0, calls=16, fill=5, hold_s=30.0,
                      flush=flush.is_set)
    held = [batcher.submit(i, urgent=False) for i in range(4)]
    time.sleep(0.1)
    assert not calls  # 4 < fill: held
    fifth = batcher.submit(4, urgent=False)
    assert [f.result(5) for f in [*held, fifth]] == [0, 1, 2, 3, 4] and batcher.waves == 1
    late = batcher.submit(5, urgent=False)
    time.sleep(0.1)
    assert not late.done()
    flush.set()  # nothing more will come: the engine says so and pokes
    batcher.poke()
    assert late.result(5) == 5 and batcher.waves == 2
    batcher.close()

    old = Batcher("o", run, max_batch=4, linger_s=0.0, fill=100, hold_s=0.05)
    started = time.monotonic()
    assert old.map([7, 8], urgent=False) == [7, 8]
    assert 0.04 <= time.monotonic() - started < 2
    old.close()


def test_a_held_batch_that_fails_is_retried_item_by_item():
    def run(items):
        if 3 in items:
            raise RuntimeError("item 3 is bad")
        return [i * 2 for i in items]

    batcher = Batcher("f", run, max_batch=8, linger_s=0.0, fill=6, hold_s=5.0)
    futures = [batcher.submit(i, urgent=False) for i in range(6)]
    assert [f.result(5) for f in futures if f is not futures[3]] == [0, 2, 4, 8, 10]
    with pytest.raises(RuntimeError, match="item 3"):
        futures[3].result(5)
    assert batcher.stats.max_batch == 6
    batcher.close()


def test_keyframes_follow_the_builder_windows():
    assert list(keyframes(16, 8)) == [0, 8] and list(keyframes(17, 8)) == [0, 8, 16]
    assert list(keyframes(1, 4)) == [0]


def gpu_plan(gib: float) -> MemoryPlanConfig:
    return MemoryPlanConfig(gpu_gib=gib, detector=ModelMemoryConfig(weights_gib=0.5, working_gib=2.5),
                      tracker=ModelMemoryConfig(weights_gib=0.5, working_gib=3.5),
                      captioner=ModelMemoryConfig(weights_gib=15.5, working_gib=4.0), reserve_gib=1.5)


def test_memory_plan_gives_vllm_what_the_other_models_leave():
    budget = plan_memory(gpu_plan(80), captioner_in_process=True)
    assert budget is not None and budget.vllm_fraction == pytest.approx((80 - 8.5) / 80, abs=1e-3)
    assert plan_memory(gpu_plan(140), True).vllm_fraction == 0.92  # capped at max_fraction


def test_memory_plan_that_cannot_fit_fails_with_the_numbers():
    with pytest.raises(MemoryPlanError, match=r"24.0 GiB GPU: detector 3.0 GiB .* leave 15.5 GiB, and the "
                                              r"captioner needs 19.5 GiB"):
        plan_memory(gpu_plan(24), captioner_in_process=True)


@pytest.mark.parametrize(("preset", "fits", "too_small"), [("annotate/gpu", 40, 24),
                                                           ("annotate/gpu-server", 24, 8)])
def test_gpu_presets_state_a_plan_that_fails_at_start_on_a_small_gpu(preset, fits, too_small):
    """The presets' own numbers, on a fake GPU size: the check runs before any model is built."""
    cfg = load_config(BuildConfig, preset, [f"engine.memory.gpu_gib={fits}"]).annotation()
    budget = memory_budget(cfg)
    assert budget is not None and 0.3 < budget.vllm_fraction <= 0.92
    small = load_config(BuildConfig, preset, [f"engine.memory.gpu_gib={too_small}"]).annotation()
    with pytest.raises(MemoryPlanError, match=f"{too_small}.0 GiB GPU"):
        engines_for(small)  # fails before loading any model
