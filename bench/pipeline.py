"""Emulated-GPU benchmark of the unit engine: the per-clip path and the streaming engine on one unit.

The models are `instvl.testing.emulated` backends: answers from the fake backends (so real rows are
written and compared), time from GPU-like cost models (launch + per-item cost saturating at a batch size;
a captioner with vLLM-style continuous batching and `max_num_seqs`). No GPU is needed. The same unit of
N InstVL-Synth clips runs through the per-clip path (`engine.mode=serial`) and the stream engine in one
run, and the rows of the two are compared (equal apart from created_at and the re-encoded media bytes).

    python bench/pipeline.py                                  # 64 clips, in-process vLLM-like captioner
    python bench/pipeline.py --openai                         # also the openai backend + a local server
    python bench/pipeline.py --prefect --json bench-pipeline.json

Per stage it reports the busy share of the phase's wall time and of the stage's own span (first call to
last), the mean batch (the captioner: running sequences per decode step), the requests in flight, and
per phase clips/s, orchestration (plan + write [+ Prefect]) and peak RSS. Emulated GPU seconds are
multiplied by `--time-scale` (0.1: ten times faster than the modelled GPU); orchestration is measured in
real seconds and reported against the modelled wall (wall / time-scale), the time it would share a GPU
unit with.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from instvl.annotate.caption.openai import OpenAICaptioner  # noqa: E402
from instvl.annotate.config import AnnotateConfig  # noqa: E402
from instvl.annotate.pipeline import Engines  # noqa: E402
from instvl.annotate.plan import make_plan  # noqa: E402
from instvl.annotate.units import install_engines, run_unit  # noqa: E402
from instvl.config import load_config  # noqa: E402
from instvl.datasets.synth import SynthConfig, generate  # noqa: E402
from instvl.datasets.writer import UnitWriter  # noqa: E402
from instvl.testing.datasets import rows_by_id  # noqa: E402
from instvl.testing.emulated import (  # noqa: E402
    ContinuousBatching,
    EmulatedCaptioner,
    EmulatedDetector,
    EmulatedDevice,
    EmulatedTracker,
    GpuCost,
    StillTracker,
    TrackCost,
    serve_openai,
)

TARGETS = {"busy": 0.80, "caption_batch": 48, "detect_batch": 6, "speedup": 3.0, "orchestration": 0.05}
VOLATILE = {"created_at", "media"}


class Orchestration:
    """Real seconds spent writing rows (UnitWriter.write / quarantine), by patching the writer class."""

    def __init__(self) -> None:
        self.write_s = 0.0
        self._saved = {name: getattr(UnitWriter, name) for name in ("write", "quarantine")}

    def __enter__(self) -> "Orchestration":
        for name, method in self._saved.items():
            def timed(writer: Any, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return _method(writer, *args, **kwargs)
                finally:
                    self.write_s += time.perf_counter() - started
            setattr(UnitWriter, name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, method in self._saved.items():
            setattr(UnitWriter, name, method)


class PeakRSS:
    """The peak resident memory of this process (MiB), sampled while the block runs."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak_mib, self._stop, self._interval = 0.0, threading.Event(), interval_s

    def _sample(self) -> None:
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
            self.peak_mib = max(self.peak_mib, pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def config(media: Path, out: Path, mode: str, args: argparse.Namespace, captioner: str) -> AnnotateConfig:
    overrides = [f"input='{media}'", f"output='{out}'", f"out.sources_per_unit={args.clips}",
                 f"ingest.num_frames={args.frames}", "ingest.max_short_side=128",
                 "trajectories.redetect_every=8",
                 "out.caption_cache=false", f"engine.mode={mode}", f"engine.clips_in_flight={args.clips}",
                 f"engine.decode_ahead={args.decode_ahead}", f"engine.decode_workers={args.decode_workers}",
                 "engine.detect_batch=8", f"engine.linger_s={args.linger_s}", "out.embed_media=false",
                 # an engine that schedules by itself (vLLM AsyncLLM, `vllm serve`): single requests, up
                 # to 2x max_num_seqs of them in flight so that it always has a queue to admit from
                 "engine.caption_batch=1", f"engine.caption_calls={2 * args.max_num_seqs}"]
    return load_config(AnnotateConfig, "annotate/fake", overrides)


def run_phase(media: Path, work: Path, mode: str, captioner: str, args: argparse.Namespace) -> dict[str, Any]:
    out = work / "out"
    cfg = config(media, out, mode, args, captioner)
    scale = args.time_scale
    detect_dev, track_dev = EmulatedDevice("detect", scale), EmulatedDevice("track", scale)
    vlm = ContinuousBatching(max_num_seqs=args.max_num_seqs, prefill_per_image_s=args.prefill_per_image_s,
                             time_scale=scale)
    detector = EmulatedDetector(cfg.detector.build(), GpuCost(0.04, 0.025, 8), detect_dev)
    tracker = EmulatedTracker(StillTracker(), TrackCost(), track_dev)  # template matching: 0.3 s CPU/window
    server = None
    if captioner == "openai":
        server = serve_openai(vlm)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        caption: Any = OpenAICaptioner(OpenAICaptioner.Config(
            base_url=url, model="emulated", api_key_env=None, concurrency=2 * args.max_num_seqs,
            max_retries=0,
            timeout_s=600))
    else:
        caption = EmulatedCaptioner(cfg.captioner.build(), vlm)
    install_engines(cfg, Engines(detector, tracker, caption, cfg.trajectories.build(detector, tracker)))
    try:
        started = time.perf_counter()
        make_plan(cfg)
        plan_s = time.perf_counter() - started
        prefect_s = 0.0
        with Orchestration() as orchestration, PeakRSS() as rss:
            started = time.perf_counter()
            if args.prefect:
                prefect_s, stats = run_with_prefect(cfg)
            else:
                stats = run_unit(cfg, "unit-00000")
            wall = time.perf_counter() - started - prefect_s
    finally:
        vlm.close()
        if server is not None:
            server.shutdown()
    rows = rows_by_id(out)
    shutil.move(out, work / f"out-{captioner}-{mode}")
    stages = {"detect": detect_dev.stats.summary(wall), "track": track_dev.stats.summary(wall),
              "caption": vlm.stats.summary(wall)}
    stages["caption"]["mean_batch"] = vlm.mean_batch()
    stages["caption"]["in_flight"] = vlm.mean_in_flight()
    modelled_wall = wall / scale
    orchestration_s = plan_s + orchestration.write_s + prefect_s
    return {"mode": mode, "captioner": captioner, "clips": args.clips, "rows": stats.rows, "wall_s": wall,
            "modelled_wall_s": modelled_wall, "clips_per_s_modelled": len(rows) / modelled_wall,
            "stages": stages, "plan_s": plan_s, "write_s": orchestration.write_s, "prefect_s": prefect_s,
            "orchestration_share": orchestration_s / (modelled_wall + orchestration_s),
            "peak_rss_mib": rss.peak_mib,
            "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "_rows": rows}


def run_with_prefect(cfg: AnnotateConfig) -> tuple[float, Any]:
    """Run the unit as the `instvl build` flow does (ephemeral Prefect server, one task); the Prefect
    share is the flow's wall time less the unit's own."""
    from instvl.annotate import units
    from instvl.flows.build_corpus import run_flow
    from instvl.flows.config import BuildConfig

    unit_wall: list[float] = []
    real = units.run_unit

    def timed(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            unit_wall.append(time.perf_counter() - started)

    import instvl.flows.build_tasks as tasks
    tasks.run_unit = timed  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        run_flow(BuildConfig.model_validate(cfg.model_dump()))
        total = time.perf_counter() - started
    finally:
        tasks.run_unit = real  # type: ignore[assignment]
    from instvl.datasets import layout
    from instvl.datasets.manifest import UnitStats
    return total - sum(unit_wall), UnitStats.read(layout.stats_path(Path(cfg.output), "unit-00000"))


def comparable(row: dict) -> dict:
    row = {k: v for k, v in row.items() if k not in VOLATILE}
    row["provenance"] = {k: v for k, v in (row.get("provenance") or {}).items() if k not in VOLATILE}
    return row


def check(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The targets, on the in-process captioner's stream phase against its serial phase."""
    stream, serial = phases["emulated/stream"], phases["emulated/serial"]
    stages = stream["stages"]
    results = {f"{name} busy >= 80% of its span": s["busy_of_phase"] >= TARGETS["busy"]
               for name, s in stages.items()}
    results["mean caption batch >= 48"] = stages["caption"]["mean_batch"] >= TARGETS["caption_batch"]
    results["mean detector batch >= 6"] = stages["detect"]["mean_batch"] >= TARGETS["detect_batch"]
    results["clips/s >= 3x per-clip path"] = \
        stream["clips_per_s_modelled"] >= TARGETS["speedup"] * serial["clips_per_s_modelled"]
    results["orchestration <= 5%"] = stream["orchestration_share"] <= TARGETS["orchestration"]
    results["rows equal"] = all(p.get("rows_equal", True) for p in phases.values())
    return results


def table(phases: dict[str, dict[str, Any]]) -> str:
    lines = ["| path | captioner | clips/s | speed-up | detect busy (wall / span) | detect batch | "
             "track busy (wall / span) | caption busy (wall / span) | caption batch | caption in flight | "
             "orchestration | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases.values():
        serial = phases.get(f"{p['captioner']}/serial", p)
        s = p["stages"]
        speedup = p["clips_per_s_modelled"] / serial["clips_per_s_modelled"]
        lines.append(
            f"| {p['mode']} | {p['captioner']} | {p['clips_per_s_modelled']:.2f} | {speedup:.1f}x | "
            f"{s['detect']['busy_of_wall']:.0%} / {s['detect']['busy_of_phase']:.0%} | "
            f"{s['detect']['mean_batch']:.1f} | "
            f"{s['track']['busy_of_wall']:.0%} / {s['track']['busy_of_phase']:.0%} | "
            f"{s['caption']['busy_of_wall']:.0%} / {s['caption']['busy_of_phase']:.0%} | "
            f"{s['caption']['mean_batch']:.1f} | {s['caption']['in_flight']:.1f} | "
            f"{p['orchestration_share']:.1%} | {p['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16, help="sampled frames per clip")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--decode-ahead", type=int, default=16)
    parser.add_argument("--prefill-per-image-s", type=float, default=0.02,
                        help="captioner prefill per image (0.02: ~400 vision tokens of a 7B VLM on an H100)")
    parser.add_argument("--linger-s", type=float, default=0.01, help="batchers' linger (real seconds)")
    parser.add_argument("--time-scale", type=float, default=0.1, help="real seconds per emulated GPU second")
    parser.add_argument("--openai", action="store_true",
                        help="also run the openai backend against a local OpenAI-compatible latency server")
    parser.add_argument("--prefect", action="store_true", help="run each unit as the Prefect build flow")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="instvl-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generate(SynthConfig(output=str(work / "synth"), format="raw", num_samples=args.clips, width=[96, 128],
                         height=[96, 128], num_frames=[args.frames, args.frames + 8], image_fraction=0.0,
                         seed=13))
    print(f"{args.clips} InstVL-Synth clips in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    phases: dict[str, dict[str, Any]] = {}
    for captioner in ["emulated"] + (["openai"] if args.openai else []):
        for mode in ("serial", "stream"):
            result = run_phase(work / "synth" / "media", work, mode, captioner, args)
            phases[f"{captioner}/{mode}"] = result
            print(f"{captioner}/{mode}: {result['wall_s']:.1f} s wall, {result['rows']} rows",
                  file=sys.stderr)
        serial_rows, stream_rows = (phases[f"{captioner}/{m}"].pop("_rows") for m in ("serial", "stream"))
        equal = list(serial_rows) == list(stream_rows) and all(
            comparable(stream_rows[k]) == comparable(v) for k, v in serial_rows.items())
        for mode in ("serial", "stream"):
            phases[f"{captioner}/{mode}"]["rows_equal"] = equal
    results = check(phases)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "phases": phases, "targets": results}
    print(table(phases))
    print()
    for name, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
