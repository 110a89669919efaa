"""Emulated-GPU benchmark of the unit engine: the per-clip path and the streaming engine on the same units.

The models are `instvl.testing.emulated` backends: answers from the fake backends (so real rows are
written and compared), time from GPU-like cost models (launch + per-item cost saturating at a batch size;
a captioner with vLLM-style continuous batching and `max_num_seqs`). No GPU is needed. Units of N
InstVL-Synth clips run through the per-clip path (`engine.mode=serial`) and the stream engine in one run,
and the rows of the two are compared (equal apart from created_at and the re-encoded media bytes). With
`--units K` the stream engine runs K units back to back as one build task does (`flow.units_per_task`);
the per-clip path runs the first `--serial-units` of them (its clips/s does not depend on the count).
`--gpus shared` puts the three models on one emulated GPU, where they take turns (`annotate/gpu`);
`--gpus split` the detector and the tracker on one and the captioner on another. `--workers N
--server-engines M` runs N worker processes, each with such a GPU, against one OpenAI-compatible server of
M data-parallel engines (`annotate/gpu-server`).

    python bench/pipeline.py                                  # one unit of 64 clips, in-process captioner
    python bench/pipeline.py --units 8 --openai               # a GPU preset's task; also the openai backend
    python bench/pipeline.py --prefect --json bench-pipeline.json
    python bench/pipeline.py --workers 4 --server-engines 3 --units 4 --concurrency 128  # gpu-server

Per stage it reports the busy share of the phase's wall time and of the stage's own span (first call to
last), the mean batch (the captioner: running sequences per decode step), the requests in flight, and
per phase clips/s, orchestration (plan + write [+ Prefect]), the clip decodes (real CPU seconds: the
decode budget) and peak RSS. Emulated GPU seconds are multiplied by `--time-scale`: at 1.0 (the default)
the models take the modelled GPU latencies while decoding runs for real on this machine, as on a GPU node;
a smaller scale speeds the GPU up against the CPU (0.1: decoding looks ten times slower than it would
beside a real GPU). Orchestration is measured in real seconds and reported against the modelled wall
(wall / time-scale), the time it would share a GPU unit with.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_probes import DecodeTimes, Orchestration, PeakRSS, engine_figures, stage_figures
from pipeline_report import check, comparable, table

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Decode worker processes re-import this script (spawn): keep its top level as light as the `instvl`
# CLI's, so that their start-up is what a real build pays (the models are imported inside functions).
if TYPE_CHECKING:
    from instvl.annotate.config import AnnotateConfig


@dataclass(frozen=True)
class CostModel:
    """The emulated GPU: detector (launch, per frame), tracker (launch, per frame, per frame and object)
    and captioner (prefill per image) seconds. `dev` is the model the engine settings are chosen on; the
    reported figures use `default` and `heavy`, which no setting was tuned on."""

    detect_launch_s: float
    detect_per_frame_s: float
    track: tuple[float, float, float]
    prefill_per_image_s: float


COST_MODELS = {
    "default": CostModel(0.04, 0.025, (0.03, 0.015, 0.008), 0.02),  # ~400 vision tokens/image, 7B VLM
    "heavy": CostModel(0.04, 0.025, (0.03, 0.015, 0.008), 0.05),    # ~1000 vision tokens/image
    "dev": CostModel(0.05, 0.02, (0.04, 0.012, 0.010), 0.03),
}
ENGINE = {"clips_in_flight": 128, "decode_ahead": 16, "linger_s": 0.005, "detect_hold_s": 1.0,
          "detect_low_water": 4, "caption_fill": 48, "caption_low_water": 4, "caption_hold_s": 5.0}
"""The engine settings (modelled seconds; chosen on `--cost-model dev`), as in the GPU presets."""


def config(media: Path, out: Path, mode: str, captioner: str, args: argparse.Namespace) -> "AnnotateConfig":
    from instvl.annotate.config import AnnotateConfig
    from instvl.config import load_config

    scale = args.time_scale  # hold times are modelled seconds; the engine waits real ones
    overrides = [f"input='{media}'", f"output='{out}'", f"out.sources_per_unit={args.clips}",
                 f"ingest.num_frames={args.frames}", "ingest.max_short_side=128",
                 "trajectories.redetect_every=8", "out.caption_cache=false", "out.embed_media=false",
                 f"engine.mode={mode}", f"engine.clips_in_flight={args.clips_in_flight}",
                 f"engine.decode_ahead={args.decode_ahead}", f"engine.decode_workers={args.decode_workers}",
                 "engine.detect_batch=8", f"engine.linger_s={args.linger_s * scale}",
                 f"engine.detect_hold_s={args.detect_hold_s * scale}",
                 f"engine.detect_low_water={args.detect_low_water}",
                 f"engine.caption_fill={args.caption_fill}",
                 f"engine.caption_hold_s={args.caption_hold_s * scale}",
                 f"engine.caption_low_water={args.caption_low_water}",
                 f"engine.caption_hold_entities={args.caption_hold_entities}",
                 f"engine.caption_waves={args.caption_waves}",
                 # openai: the engine keeps the captioner's `concurrency` requests in flight, as a preset does
                 *(feed_settings(args) if captioner == "emulated" else [])]
    return load_config(AnnotateConfig, "annotate/fake", overrides)


def feed_settings(args: argparse.Namespace) -> list[str]:
    """How the in-process captioner is fed. continuous: single requests, up to 2x max_num_seqs in flight,
    so that the engine always has a queue to admit from as sequences finish (the vllm captioner with
    `concurrency`, as annotate/gpu; `vllm serve`). calls: one call of max_num_seqs requests at a time, run
    to its last sequence (`llm.chat` per batch: the vllm captioner without `concurrency`)."""
    if args.feed == "calls":
        return [f"engine.caption_batch={args.max_num_seqs}", "engine.caption_calls=1"]
    return ["engine.caption_batch=1", f"engine.caption_calls={2 * args.max_num_seqs}"]


def run_phase(media: Path, work: Path, mode: str, captioner: str, args: argparse.Namespace,
              server_url: str | None = None, first_unit: int = 0, barrier: Any = None) -> dict[str, Any]:
    """One path (`mode`) over its units, with `captioner` (emulated: in process; openai: a latency server of
    its own, or the shared one at `server_url`, whose engines the caller measures). The units are the
    plan's from `first_unit`; with `barrier`, the run starts when every worker's is ready."""
    from instvl.annotate.caption.openai import OpenAICaptioner
    from instvl.annotate.pipeline import Engines
    from instvl.annotate.plan import make_plan
    from instvl.annotate.units import install_engines, run_units
    from instvl.testing.datasets import rows_by_id
    from instvl.testing.emulated import (
        ContinuousBatching,
        EmulatedCaptioner,
        EmulatedDetector,
        EmulatedDevice,
        EmulatedTracker,
        GpuCost,
        SharedGpu,
        StillTracker,
        TrackCost,
        serve_openai,
    )

    out = work / "out"
    cfg = config(media, out, mode, captioner, args)
    cost, scale = COST_MODELS[args.cost_model], args.time_scale
    prefill = args.prefill_per_image_s if args.prefill_per_image_s is not None else cost.prefill_per_image_s
    # shared (annotate/gpu): every model on one GPU; split (annotate/gpu-server): the captioner apart
    gpu = SharedGpu() if args.gpus in ("shared", "split") else None
    detect_dev, track_dev = EmulatedDevice("detect", scale, gpu), EmulatedDevice("track", scale, gpu)
    vlm = None if server_url else ContinuousBatching(
        max_num_seqs=args.max_num_seqs, prefill_per_image_s=prefill, time_scale=scale,
        gpu=gpu if args.gpus == "shared" else None)
    detect_cost = GpuCost(cost.detect_launch_s, cost.detect_per_frame_s, 8)
    detector = EmulatedDetector(cfg.detector.build(), detect_cost, detect_dev)
    # template matching costs 0.3 s of CPU per window: the emulated tracker answers with still boxes
    tracker = EmulatedTracker(StillTracker(), TrackCost(*cost.track), track_dev)
    server = None
    if captioner == "openai":
        if vlm is not None:  # a latency server of this phase's own
            server = serve_openai(vlm)
            server_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        caption: Any = OpenAICaptioner(OpenAICaptioner.Config(
            base_url=server_url, model="emulated", api_key_env=None, concurrency=args.concurrency,
            max_retries=0, timeout_s=600))
    else:
        caption = EmulatedCaptioner(cfg.captioner.build(), vlm)
    install_engines(cfg, Engines(detector, tracker, caption, cfg.trajectories.build(detector, tracker)))
    try:
        started = time.perf_counter()
        count = args.units if mode == "stream" else args.serial_units
        units = [unit.unit_id for unit in make_plan(cfg).units][first_unit: first_unit + count]
        plan_s = time.perf_counter() - started
        prefect_s = 0.0
        if barrier is not None:
            barrier.wait()
        with Orchestration() as orchestration, PeakRSS() as rss, DecodeTimes() as decodes:
            if args.prefect:
                prefect_s, stats, run_start, run_end = run_with_prefect(cfg, units)
            else:
                run_start = time.perf_counter()
                stats = run_units(cfg, units)
                run_end = time.perf_counter()
    finally:
        if vlm is not None:
            vlm.close()
        if server is not None:
            server.shutdown()
    wall = run_end - run_start
    rows = rows_by_id(out)
    shutil.move(out, work / f"out-{captioner}-{mode}")
    stages = {name: stage_figures(dev.stats, run_start, run_end)
              for name, dev in (("detect", detect_dev), ("track", track_dev))}
    if gpu is not None:
        stages["gpu"] = stage_figures(gpu.stats, run_start, run_end)
    if vlm is not None:
        stages["caption"] = engine_figures([vlm], run_start, run_end)
    modelled_wall = wall / scale
    orchestration_s = plan_s + orchestration.write_s
    return {"mode": mode, "captioner": captioner, "gpus": args.gpus, "feed": args.feed, "clips": args.clips,
            "units": len(units),
            "rows": sum(unit.rows for unit in stats), "wall_s": wall,
            "run_start": run_start, "run_end": run_end,
            "modelled_wall_s": modelled_wall, "clips_per_s_modelled": len(rows) / modelled_wall,
            "first_gpu_call_s": min(s["phase_start_s"] for s in stages.values()),
            "stages": stages, "decode": decodes.summary(run_start), "plan_s": plan_s,
            "write_s": orchestration.write_s, "prefect_s": prefect_s,
            "orchestration_share": orchestration_s / (modelled_wall + orchestration_s),
            "prefect_share": prefect_s / (modelled_wall + orchestration_s + prefect_s),
            "peak_rss_mib": rss.peak_mib,
            "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "caption_steps": [(round(t - run_start, 3), n, a, round(sec, 3))
                              for t, n, a, sec in (vlm.trace if vlm else [])],
            "detect_calls": [(round(t - run_start, 3), n, round(sec, 3)) for t, n, sec in detect_dev.trace],
            "_rows": rows}


def run_workers(media: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """`--workers` processes, each a build task with a GPU of its own (the detector and the tracker take
    turns on it), against one OpenAI-compatible server of `--server-engines` data-parallel engines (a node's
    `vllm serve --data-parallel-size M` shared by its workers: annotate/gpu-server). Each worker runs its
    own units; the figures are the run's (first worker's start to last worker's end), a stage's busy share
    the least busy worker's (engine's) and its batch the mean over all calls (steps)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from instvl.testing.emulated import ContinuousBatching, serve_openai

    cost = COST_MODELS[args.cost_model]
    prefill = args.prefill_per_image_s if args.prefill_per_image_s is not None else cost.prefill_per_image_s
    engines = [ContinuousBatching(max_num_seqs=args.max_num_seqs, prefill_per_image_s=prefill,
                                  time_scale=args.time_scale) for _ in range(args.server_engines)]
    server = serve_openai(engines)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    spawn = multiprocessing.get_context("spawn")  # a worker starts decode processes of its own
    try:
        with spawn.Manager() as manager, ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
            barrier = manager.Barrier(args.workers)
            futures = [pool.submit(run_phase, media, work / f"worker-{i}", mode, "openai", args, url,
                                   i * args.units, barrier) for i in range(args.workers)]
            workers = [future.result() for future in futures]
    finally:
        for engine in engines:
            engine.close()
        server.shutdown()
    run_start, run_end = min(w["run_start"] for w in workers), max(w["run_end"] for w in workers)
    stages: dict[str, dict[str, Any]] = {}
    for name in ("detect", "track", "gpu"):
        each = [w["stages"][name] for w in workers]
        calls = sum(f["calls"] for f in each)
        stages[name] = {**min(each, key=lambda f: f["busy_of_phase"]),
                        "mean_batch": sum(f["items"] for f in each) / calls if calls else 0.0,
                        "busy_of_phase_each": [f["busy_of_phase"] for f in each]}
    stages["caption"] = engine_figures(engines, run_start, run_end)
    rows = {k: v for w in workers for k, v in w.pop("_rows").items()}
    modelled_wall = (run_end - run_start) / args.time_scale
    return {"mode": mode, "captioner": served_name(args), "gpus": "split", "feed": "openai",
            "clips": args.clips, "units": workers[0]["units"], "workers": workers,
            "rows": sum(w["rows"] for w in workers), "wall_s": run_end - run_start,
            "modelled_wall_s": modelled_wall, "clips_per_s_modelled": len(rows) / modelled_wall,
            "first_gpu_call_s": min(s["phase_start_s"] for s in stages.values()),
            "stages": stages, "plan_s": max(w["plan_s"] for w in workers),
            "write_s": max(w["write_s"] for w in workers), "prefect_s": 0.0,
            "orchestration_share": max(w["orchestration_share"] for w in workers), "prefect_share": 0.0,
            "peak_rss_mib": max(w["peak_rss_mib"] for w in workers),
            "caption_steps": [(round(t - run_start, 3), n, a, round(sec, 3))
                              for t, n, a, sec in engines[0].trace],
            "_rows": rows}


def served_name(args: argparse.Namespace) -> str:
    return f"openai, {args.workers} workers, {args.server_engines} engines"


def run_with_prefect(cfg: "AnnotateConfig", unit_ids: list[str]) -> tuple[float, Any, float, float]:
    """Run the units as the `instvl build` flow does (embedded Prefect server, one task for all of them):
    returns the Prefect share (the flow's wall time less the units' own, server start-up included), the
    units' stats and their start and end."""
    import instvl.flows.build_tasks as tasks
    from instvl.datasets import layout
    from instvl.datasets.manifest import UnitStats
    from instvl.flows.build_corpus import run_flow
    from instvl.flows.config import BuildConfig

    spans: list[tuple[float, float]] = []
    real = tasks.run_units

    def timed(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spans.append((started, time.perf_counter()))

    tasks.run_units = timed
    try:
        started = time.perf_counter()
        run_flow(BuildConfig.model_validate({**cfg.model_dump(), "flow": {"units_per_task": len(unit_ids)}}))
        total = time.perf_counter() - started
    finally:
        tasks.run_units = real
    if len(spans) != 1:
        raise RuntimeError(f"the flow ran {len(spans)} tasks, expected 1")
    (run_start, run_end), = spans
    stats = [UnitStats.read(layout.stats_path(Path(str(cfg.output)), unit)) for unit in unit_ids]
    return total - (run_end - run_start), stats, run_start, run_end


def main() -> int:
    from instvl.datasets.synth import SynthConfig, generate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per unit")
    parser.add_argument("--units", type=int, default=1,
                        help="units the stream engine runs back to back (`flow.units_per_task`)")
    parser.add_argument("--serial-units", type=int, default=1,
                        help="of those, how many the per-clip path runs (its clips/s does not depend on "
                             "the number of units; its rows are compared with the stream's rows of them)")
    parser.add_argument("--frames", type=int, default=16, help="sampled frames per clip")
    parser.add_argument("--cost-model", choices=sorted(COST_MODELS), default="default",
                        help="the emulated GPU (`dev`: the one the engine settings are chosen on)")
    parser.add_argument("--prefill-per-image-s", type=float,
                        help="override the cost model's captioner prefill per image")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--feed", choices=["continuous", "calls"], default="continuous",
                        help="the in-process captioner: continuous (requests join the running batch; the "
                             "vllm captioner with concurrency) or calls (one llm.chat of max-num-seqs "
                             "requests at a time)")
    parser.add_argument("--gpus", choices=["separate", "split", "shared"], default="separate",
                        help="separate: each model on a GPU of its own; split: the detector and the tracker "
                             "share one, the captioner has another (annotate/gpu-server); shared: the three "
                             "take turns on one GPU (annotate/gpu)")
    parser.add_argument("--concurrency", type=int,
                        help="the openai captioner's requests in flight (default: 2x max-num-seqs)")
    parser.add_argument("--workers", type=int, default=0,
                        help="N worker processes, each with a GPU for its detector and tracker, against one "
                             "OpenAI-compatible server (annotate/gpu-server); each runs --units units")
    parser.add_argument("--server-engines", type=int, default=1,
                        help="with --workers: the server's data-parallel engines (GPUs), each with "
                             "max-num-seqs; a request goes to the least loaded one")
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--clips-in-flight", type=int, default=ENGINE["clips_in_flight"])
    parser.add_argument("--decode-ahead", type=int, default=ENGINE["decode_ahead"])
    parser.add_argument("--linger-s", type=float, default=ENGINE["linger_s"],
                        help="batchers' linger for urgent work (modelled seconds)")
    parser.add_argument("--detect-hold-s", type=float, default=ENGINE["detect_hold_s"],
                        help="longest a keyframe waits for a full detector batch (modelled seconds)")
    parser.add_argument("--detect-low-water", type=int, default=ENGINE["detect_low_water"],
                        help="clips ready for the tracker above which keyframes wait for a full batch")
    parser.add_argument("--caption-fill", type=int, default=ENGINE["caption_fill"],
                        help="instance-caption requests held until this many wait (0: none held)")
    parser.add_argument("--caption-low-water", type=int, default=ENGINE["caption_low_water"],
                        help="held captions go when at most this many clips are ahead of the tracker")
    parser.add_argument("--caption-hold-s", type=float, default=ENGINE["caption_hold_s"],
                        help="longest an instance-caption request is held (modelled seconds)")
    parser.add_argument("--caption-hold-entities", action="store_true",
                        help="hold entity captions too while the tracker has work (for one shared GPU)")
    parser.add_argument("--caption-waves", action="store_true",
                        help="held caption requests go in waves that start and end together (annotate/gpu)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="real seconds per emulated GPU second (1.0: real GPU latencies against this "
                             "machine's real decoding; smaller values make the CPU look slower)")
    parser.add_argument("--openai", action="store_true",
                        help="also run the openai backend against a local OpenAI-compatible latency server")
    parser.add_argument("--prefect", action="store_true",
                        help="run the stream phase as the Prefect build flow (embedded server)")
    parser.add_argument("--paths", choices=["both", "stream"], default="both",
                        help="`stream`: the stream engine only (for choosing settings on `dev`; no ratios)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.concurrency = args.concurrency or 2 * args.max_num_seqs
    if args.workers:
        if args.prefect or args.openai:
            parser.error("--workers runs the openai captioner against a shared server, without Prefect")
        args.gpus = "split"

    work = args.keep or Path(tempfile.mkdtemp(prefix="instvl-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    clips = args.clips * args.units * max(1, args.workers)
    generate(SynthConfig(output=str(work / "synth"), format="raw", num_samples=clips,
                         width=[96, 128], height=[96, 128], num_frames=[args.frames, args.frames + 8],
                         image_fraction=0.0, seed=13))
    print(f"{clips} InstVL-Synth clips in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    phases: dict[str, dict[str, Any]] = {}
    captioners = [served_name(args)] if args.workers else ["emulated"] + (["openai"] if args.openai else [])
    for captioner in captioners:
        for mode in ("serial", "stream") if args.paths == "both" else ("stream",):
            prefect = args.prefect and mode == "stream" and captioner == "emulated"
            if args.workers:
                result = run_workers(work / "synth" / "media", work, mode, args)
            else:
                result = run_phase(work / "synth" / "media", work, mode, captioner,
                                   argparse.Namespace(**{**vars(args), "prefect": prefect}))
            phases[f"{captioner}/{mode}"] = result
            print(f"{captioner}/{mode}: {result['wall_s']:.1f} s wall, {result['rows']} rows",
                  file=sys.stderr)
        if args.paths != "both":
            phases[f"{captioner}/stream"].pop("_rows")
            continue
        serial_rows, stream_rows = (phases[f"{captioner}/{m}"].pop("_rows") for m in ("serial", "stream"))
        # the per-clip path runs the first `--serial-units` units: the stream's rows of those, in order
        shared = [k for k in stream_rows if k in serial_rows]
        equal = list(serial_rows) == shared and all(
            comparable(stream_rows[k]) == comparable(v) for k, v in serial_rows.items())
        for mode in ("serial", "stream"):
            phases[f"{captioner}/{mode}"]["rows_equal"] = equal
    results = check(phases, captioners[0])
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
