"""Loader throughput per CPU core on realistic media, beside the demand of a GPU at a given MFU.

Media: 10-s 30-fps H.264 clips (a pan over scikit-image photos with sensor-like noise) and 1024x768 JPEGs
(quality 90), written with `instvl.media.encode`, each row with 8 instances whose boxes move every
frame. Each comes as its source and as the stored renditions a shard row embeds. Source clips are what
a camera or an upload gives (1280x720, libx264 veryfast crf 23 with x264's defaults: a keyframe every
250 frames, B-pyramid; ~0.8 Mb/s); "stored" clips and images are made from those source files by
`media.clips.clip_media`, as a build does (short side at most `ingest.store_short_side` for clips,
`store_image_short_side` for images; clips encoded with `out.video`, `media.encode.VideoEncodingConfig`):
what the trainer reads. For each preset it times what one DataLoader worker does per sample
(`transforms.prepare_sample` + the batch's `collate` and tokenisation) in CPU seconds of this process
with torch/OpenCV held to one thread, so the figure is per core. Demand: samples/s one GPU consumes at
`--mfu` of `--peak-tflops`, from the FLOPs per sample (`instvl.train.flops.step_flops`). Supply:
`--cores` cores per GPU. Mix rows pair source images with source clips and each stored image kind with
each stored clip kind.

    python bench/loader.py                              # vit-b16 and vit-l14, sources and stored media
    python bench/loader.py --json loader.json --image-share 0.975 --cores 12
    python bench/loader.py --preset train/vit-b16 --set data.decode_quality=exact   # or fast, draft
    python bench/loader.py --preset train/vit-b16 --short-side 288 --short-side 360 --image-side 360 \
        --image-side 448 --first-seed 0                 # choose renditions on clips 0-2, report on 100-102
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from instvl.config import load_config  # noqa: E402
from instvl.media.clips import clip_media  # noqa: E402
from instvl.media.encode import VideoEncodingConfig, encode_image, encode_mp4  # noqa: E402
from instvl.media.ingest import IngestConfig, ingest  # noqa: E402
from instvl.train.batch import collate  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.flops import step_flops  # noqa: E402
from instvl.train.model import load_tokenizer  # noqa: E402
from instvl.train.transforms import prepare_sample  # noqa: E402

PRESETS = ("train/vit-b16", "train/vit-l14")


def natural_canvas(width: int, height: int) -> np.ndarray:
    """A large photo mosaic (scikit-image samples) to pan over."""
    import cv2
    import skimage.data as sd

    tiles = [sd.astronaut(), sd.coffee(), sd.chelsea(), sd.rocket()]
    tiles = [cv2.resize(t, (height * t.shape[1] // t.shape[0], height)) for t in tiles]
    return np.concatenate(tiles, axis=1)[:, : max(width, sum(t.shape[1] for t in tiles))]


def video_frames(seed: int, seconds: float = 10.0, fps: int = 30, width: int = 1280,
                 height: int = 720) -> Iterator[np.ndarray]:
    """A noisy pan over the photo mosaic, one frame at a time."""
    rng = np.random.default_rng(seed)
    canvas = natural_canvas(width, int(height * 1.3))
    count = int(seconds * fps)
    for t in range(count):
        x = int((canvas.shape[1] - width) * t / count)
        y = int((canvas.shape[0] - height) * (0.5 + 0.45 * np.sin(t / 40 + seed)))
        noise = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
        frame = canvas[y:y + height, x:x + width].astype(np.int16) + noise
        yield np.clip(frame, 0, 255).astype(np.uint8)


def video_bytes(seed: int, fps: int = 30) -> bytes:
    """A source clip: 1280x720, x264's defaults."""
    return encode_mp4(video_frames(seed, fps=fps), float(fps))


Stored = tuple[int | None, VideoEncodingConfig | None]
"""How `clip_media` stores a source: (short side, clip encoding; None for images)."""


def stored_bytes(source: Path, stored: Stored) -> bytes:
    """The media a shard row embeds for the source file: `clip_media` with these settings."""
    side, encoding = stored
    cfg = IngestConfig(store_short_side=side, store_image_short_side=side, max_short_side=None,  # None: all
                       max_clip_s=None, shots={"enabled": False}, dedupe=False)
    specs, failures = ingest(source, cfg)
    if failures or len(specs) != 1:
        raise RuntimeError(f"{source}: {failures or specs}")
    return clip_media(specs[0], cfg, str(source), video=encoding)[0]


def image_bytes(seed: int, width: int = 1024, height: int = 768) -> bytes:
    rng = np.random.default_rng(seed)
    canvas = natural_canvas(width, height)
    x = int(rng.integers(0, canvas.shape[1] - width + 1))
    noise = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    frame = np.clip(canvas[:, x:x + width].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return encode_image(frame, "jpeg", quality=90)


def instances(frames: int, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` instances with a box on every frame, drifting across the picture."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        start, size = rng.uniform(0.05, 0.6, 2), rng.uniform(0.1, 0.35, 2)
        drift = rng.uniform(-0.3, 0.3, 2) * np.linspace(0, 1, frames)[:, None]
        xy = np.clip(start + drift, 0, 1 - size)
        boxes = np.concatenate([xy, xy + size], axis=1).astype(np.float32)
        out.append({"instance_id": k, "phrase": "thing", "caption": f"a thing number {k} moves. it is red.",
                    "score": 0.9, "trajectory": {"frame_index": list(range(frames)), "box": boxes.tolist(),
                                                 "score": [0.9] * frames}})
    return out


def media_kinds(short_sides: list[int | None], keyints: list[int | None], bframes: int | None,
                image_sides: list[int | None]) -> dict[str, tuple[str, Stored | None]]:
    """{label: (image | video, stored settings; None: the source)} of every media kind to measure."""
    kinds: dict[str, tuple[str, Stored | None]] = {"image 1024x768 (source)": ("image", None)}
    for side in image_sides:
        kinds[f"image stored {side}p"] = ("image", (side, None))
    kinds["video 720p k250 (source)"] = ("video", None)
    for side in short_sides:
        for keyint in keyints:
            encoding = VideoEncodingConfig(keyint=keyint, bframes=bframes)
            kinds[f"video stored {side or 720}p k{keyint or 250} b{bframes}"] = ("video", (side, encoding))
    return kinds


def _file_tag(stored: Stored | None) -> str:
    if stored is None:
        return "source"
    side, enc = stored
    return f"s{side}" if enc is None else f"s{side}-k{enc.keyint}-b{enc.bframes}-crf{enc.crf}-{enc.preset}"


def make_rows(folder: Path, kinds: dict[str, tuple[str, Stored | None]], videos: int, images: int,
              first_seed: int) -> dict[str, list[dict[str, Any]]]:
    """{media kind: rows with embedded media} (generated once into `folder`, reused by later runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, (kind, stored) in kinds.items():
        count, ext = (images, "jpg") if kind == "image" else (videos, "mp4")
        for i in range(first_seed, first_seed + count):
            source = folder / f"{kind}-{i}-source.{ext}"
            if not source.exists():
                source.write_bytes(image_bytes(i) if kind == "image" else video_bytes(i))
            path = folder / f"{kind}-{i}-{_file_tag(stored)}.{ext}"
            if not path.exists():
                path.write_bytes(stored_bytes(source, stored))
            frames = 1 if kind == "image" else 300
            rows.setdefault(label, []).append({
                "sample_id": f"{label}-{i}", "media_type": kind, "media": path.read_bytes(),
                "num_frames": frames, "global_caption": "a scene. things move in it.",
                "instances": instances(frames, 8, i), "source": {"uri": str(path)}})
    return rows


def time_samples(cfg: TrainConfig, rows: list[dict[str, Any]], tokenizer: Any, repeats: int) -> list[float]:
    """CPU seconds per sample of prepare_sample + collate (one batch per row, so collate is included)."""
    times = []
    for epoch in range(repeats):
        for row in rows:
            started = time.process_time()
            sample = prepare_sample(row, cfg.data, epoch, train=True)  # type: ignore[arg-type]
            collate([sample], tokenizer, cfg.data, cfg.model.text.max_len)
            times.append(time.process_time() - started)
    return times


def _int_or_none(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "x264") else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="presets (default: vit-b16 and vit-l14)")
    parser.add_argument("--media-dir", default=os.path.join(tempfile.gettempdir(), "instvl-bench-loader"),
                        help="where the generated media are kept between runs")
    parser.add_argument("--videos", type=int, default=3, help="clips of each video kind")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first clip and image "
                        "(another value gives another set: choose settings on one, report on another)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs over the rows (other frames each)")
    ingest_cfg = IngestConfig()
    parser.add_argument("--short-side", type=_int_or_none, action="append",
                        help="stored clips' short side (repeatable; none: 720p as the source; default: "
                             f"ingest.store_short_side, {ingest_cfg.store_short_side})")
    parser.add_argument("--image-side", type=_int_or_none, action="append",
                        help="stored images' short side (repeatable; default: ingest.store_image_short_side, "
                             f"{ingest_cfg.store_image_short_side})")
    parser.add_argument("--keyint", type=_int_or_none, action="append",
                        help="shard clips' keyframe interval (repeatable; default: VideoEncodingConfig's)")
    parser.add_argument("--bframes", type=_int_or_none, default=VideoEncodingConfig().bframes)
    parser.add_argument("--cores", type=int, default=12, help="CPU cores per GPU")
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 bf16 dense")
    parser.add_argument("--image-share", type=float, default=0.975, help="share of image samples (InstVL)")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides (a.b=c)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    kinds = media_kinds(args.short_side or [ingest_cfg.store_short_side],
                        args.keyint or [VideoEncodingConfig().keyint], args.bframes,
                        args.image_side or [ingest_cfg.store_image_short_side])
    rows = make_rows(Path(args.media_dir), kinds, args.videos, args.images, args.first_seed)
    results = []
    load_start = os.getloadavg()[0]
    print(f"{args.cores} cores per GPU, demand at {args.mfu:.0%} MFU of {args.peak_tflops:g} TFLOP/s; "
          f"mix = {args.image_share:.1%} images; load average {load_start:.1f}\n")
    print("| preset | media | KiB/sample | CPU s/sample (median) | per-core samples/s | TFLOP/sample | "
          f"GPU demand samples/s | {args.cores}-core supply samples/s | supply/demand |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.preset or PRESETS:
        cfg = load_config(TrainConfig, preset, args.set)
        tokenizer = load_tokenizer(cfg.model.text.model_copy(update={"model": "minilm"}))
        entry: dict[str, Any] = {"preset": preset, "overrides": args.set}
        flops_of = {kind: step_flops(cfg, kind)["total"] for kind in ("image", "video")}  # type: ignore[arg-type]
        for media, (kind, _stored) in kinds.items():
            times = time_samples(cfg, rows[media], tokenizer, args.repeats)
            seconds = statistics.median(times)
            size = statistics.mean(len(r["media"]) for r in rows[media])
            flops = flops_of[kind]
            demand = args.mfu * args.peak_tflops * 1e12 / flops
            supply = args.cores / seconds
            entry[media] = {"kind": kind, "cpu_s_per_sample": seconds, "cpu_s_all": times,
                            "bytes_per_sample": size, "flops_per_sample": flops, "demand_per_gpu": demand,
                            "supply_per_gpu": supply, "ratio": supply / demand}
            print(f"| {preset} | {media} | {size / 1024:.0f} | {seconds:.4f} | {1 / seconds:.1f} | "
                  f"{flops / 1e12:.3f} | {demand:.0f} | {supply:.0f} | {supply / demand:.2f}x |", flush=True)
        share = args.image_share
        pairs = [(i, v) for i, (ik, istored) in kinds.items() for v, (vk, vstored) in kinds.items()
                 if ik == "image" and vk == "video" and (istored is None) == (vstored is None)]
        for image_kind, video_kind in pairs:
            image, video = entry[image_kind], entry[video_kind]
            cpu = share * image["cpu_s_per_sample"] + (1 - share) * video["cpu_s_per_sample"]
            gpu = share * image["flops_per_sample"] + (1 - share) * video["flops_per_sample"]
            demand, supply = args.mfu * args.peak_tflops * 1e12 / gpu, args.cores / cpu
            label = f"mix ({image_kind} + {video_kind})"
            entry[label] = {"image_share": share, "cpu_s_per_sample": cpu, "flops_per_sample": gpu,
                            "demand_per_gpu": demand, "supply_per_gpu": supply, "ratio": supply / demand}
            print(f"| {preset} | {label} | | {cpu:.4f} | {1 / cpu:.1f} | {gpu / 1e12:.3f} | "
                  f"{demand:.0f} | {supply:.0f} | {supply / demand:.2f}x |", flush=True)
        results.append(entry)
    load = {"start": load_start, "end": os.getloadavg()[0]}
    print(f"\nload average {load['start']:.1f} at the start, {load['end']:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "load_average": load, "results": results},
                                              indent=2))


if __name__ == "__main__":
    main()
