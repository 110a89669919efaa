"""Factories for small InstVL datasets written with the real UnitWriter (no InstVL-Synth needed)."""

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instvl.datasets.records import Instance, QCRecord, Sample, Trajectory
from instvl.datasets.shards import UnitWriter, write_manifest

PHRASES = ("red square", "blue circle", "green triangle")
COLOURS = ((220, 40, 40), (40, 80, 220), (40, 180, 60))


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """(T, H, W, 3) uint8 frames as H.264 MP4 bytes."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def scene(num_frames: int, width: int, height: int, boxes: list[np.ndarray]) -> np.ndarray:
    """Grey frames with one filled rectangle per instance at its (T, 4) normalised boxes."""
    frames = np.full((num_frames, height, width, 3), 90, np.uint8)
    for colour, track in zip(COLOURS, boxes, strict=False):
        for t, (x0, y0, x1, y1) in enumerate(track):
            frames[t, int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)] = colour
    return frames


def make_sample(index: int = 0, *, media_type: str = "video", num_instances: int = 2, num_frames: int = 8,
                width: int = 64, height: int = 48, with_media: bool = False, split: str = "train",
                prefix: str = "s") -> Sample:
    """A valid sample: instance k moves right over every frame (images: frame 0 only)."""
    frames_total = num_frames if media_type == "video" else 1
    tracks = []
    for k in range(num_instances):
        x = np.linspace(0.05, 0.55, frames_total, dtype=np.float32)
        y0 = 0.1 + 0.25 * k
        tracks.append(np.stack([x, np.full_like(x, y0), x + 0.3, np.full_like(x, y0 + 0.2)], axis=1))
    instances = [
        Instance(instance_id=k, phrase=PHRASES[k % 3], caption=f"the {PHRASES[k % 3]} number {k} slides right",
                 score=0.9, trajectory=Trajectory(frame_index=list(range(frames_total)), box=track.tolist(),
                                                  score=[0.8] * frames_total))
        for k, track in enumerate(tracks)]
    media = None
    if with_media:
        pixels = scene(frames_total, width, height, tracks)
        media = encode_mp4(pixels) if media_type == "video" else encode_png(pixels[0])
    return Sample(
        sample_id=f"{prefix}-{index:05d}", media_type=media_type, width=width, height=height,
        num_frames=frames_total, global_caption=f"scene {index} with {num_instances} moving shapes",
        instances=instances, fps=8.0 if media_type == "video" else None, media=media,
        media_format=("mp4" if media_type == "video" else "png") if with_media else None,
        uri=f"file:///data/clip-{index}.mp4", sha256="0" * 64, clip_start_s=0.0 if media_type == "video" else None,
        clip_end_s=num_frames / 8.0 if media_type == "video" else None,
        qc=QCRecord(status="auto", route_reasons=["confident"]), models={"detector": "fake"},
        config_hash="abc", created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), split=split)


@pytest.fixture
def sample_factory() -> Callable[..., Sample]:
    return make_sample


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a dataset root of `units` x `per_unit` samples; `mutate(row)` may corrupt one row.

    `mutate` receives every row dict (with its position in the dataset) before it is written and may
    change it in place; `samples` replaces the generated samples entirely.
    """
    counter = iter(range(1000))

    def make(units: int = 1, per_unit: int = 4, *, row_group_rows: int = 2, with_media: bool = False,
             mutate: Callable[[int, dict[str, Any]], None] | None = None, samples: list[Sample] | None = None,
             quarantine: int = 0, root: Path | None = None, **sample_kwargs: Any) -> Path:
        root = root or tmp_path / f"ds{next(counter)}"
        pool = samples if samples is not None else [
            make_sample(i, with_media=with_media, **sample_kwargs) for i in range(units * per_unit)]
        chunk = max(1, -(-len(pool) // units))
        for unit in range(units):
            with UnitWriter(root, f"shard-{unit:05d}", config={"test": True}, row_group_rows=row_group_rows) as w:
                for position, sample in enumerate(pool[unit * chunk:(unit + 1) * chunk], start=unit * chunk):
                    row = sample.to_row()
                    if mutate is not None:
                        mutate(position, row)
                    w.write(row)
                for q in range(quarantine):
                    w.quarantine(f"file:///bad/{unit}-{q}.mp4", "zero-length file", "probe")
        write_manifest(root)
        return root

    return make
