"""Small valid InstVL samples and dataset roots, written with the real UnitWriter (no InstVL-Synth needed).

    sample = make_sample(3, num_instances=2, with_media=True)      # instance k slides right, row k
    root = write_dataset(tmp / "ds", units=2, per_unit=4)          # shards, stats, manifest
    root = write_dataset(tmp / "bad", mutate=lambda i, row: row.update(split="nope") if i == 1 else None)
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from instvl.datasets.manifest import write_manifest
from instvl.datasets.reader import read_table
from instvl.datasets.records import Instance, QCRecord, Sample, Trajectory
from instvl.datasets.schema import SampleRow
from instvl.datasets.writer import UnitWriter
from instvl.testing.media import mp4_bytes, paint_boxes, png_bytes

PHRASES = ("red square", "blue circle", "green triangle")
COLOURS = ((220, 40, 40), (40, 80, 220), (40, 180, 60))
"""The fill of instance k is COLOURS[k % 3] in media written by `make_sample`."""

Mutate = Callable[[int, SampleRow], None]


def make_sample(index: int = 0, *, media_type: str = "video", num_instances: int = 2, num_frames: int = 8,
                width: int = 64, height: int = 48, with_media: bool = False, keyframe_every: int = 1,
                status: str = "auto", split: str = "train", prefix: str = "s") -> Sample:
    """A valid sample `{prefix}-{index:05d}`: instance k moves right along row k over every frame.

    Images have one frame. The trajectory keeps every `keyframe_every`-th frame (the rest are for a
    reader to interpolate). With `with_media`, the shapes are painted in COLOURS on a grey that depends
    on `index`, and embedded as MP4 or PNG.
    """
    frames_total = num_frames if media_type == "video" else 1
    tracks = []
    for k in range(num_instances):
        x = np.linspace(0.05, 0.55, frames_total, dtype=np.float32)
        y0 = 0.1 + 0.25 * k
        tracks.append(np.stack([x, np.full_like(x, y0), x + 0.3, np.full_like(x, y0 + 0.2)], axis=1))
    keys = list(range(0, frames_total, keyframe_every))
    instances = [
        Instance(instance_id=k, phrase=PHRASES[k % 3], score=0.9,
                 caption=f"the {PHRASES[k % 3]} number {k} slides right",
                 trajectory=Trajectory(frame_index=keys, box=track[keys].tolist(), score=[0.8] * len(keys)))
        for k, track in enumerate(tracks)]
    media = media_format = None
    if with_media:
        boxes = np.stack(tracks, axis=1) if tracks else np.zeros((frames_total, 0, 4))
        background = 60 + 15 * (index % 8)  # samples differ in colour, not only in their captions
        pixels = paint_boxes(boxes, width, height, [COLOURS[k % 3] for k in range(num_instances)], background)
        if media_type == "video":
            media, media_format = mp4_bytes(pixels), "mp4"
        else:
            media, media_format = png_bytes(pixels[0]), "png"
    video = media_type == "video"
    return Sample(
        sample_id=f"{prefix}-{index:05d}", media_type=media_type, width=width, height=height,
        num_frames=frames_total, global_caption=f"scene {index} with {num_instances} moving shapes",
        instances=instances, fps=8.0 if video else None, media=media, media_format=media_format,
        uri=f"file:///data/clip-{index}.mp4", sha256="0" * 64, clip_start_s=0.0 if video else None,
        clip_end_s=num_frames / 8.0 if video else None,
        qc=QCRecord(status=status, route_reasons=["confident"]), models={"detector": "fake"},
        config_hash="abc", created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), split=split)


def write_dataset(root: str | Path, samples: Sequence[Sample] | None = None, *, units: int = 1,
                  per_unit: int = 4, row_group_rows: int = 2, mutate: Mutate | None = None,
                  quarantine: int = 0, **sample_kwargs: Any) -> Path:
    """Write a dataset root of `units` units (`shard-00000`, ...) and its manifest; returns the root.

    `samples` default to `make_sample(i, **sample_kwargs)` for i < units * per_unit, split into `units`
    consecutive runs. `mutate(position, row)` sees every row dict before it is written and may change it
    in place (to corrupt one for a validator). Each unit also quarantines `quarantine` made-up inputs.
    """
    root = Path(root)
    pool = list(samples) if samples is not None else [
        make_sample(i, **sample_kwargs) for i in range(units * per_unit)]
    chunk = max(1, -(-len(pool) // units))
    for unit in range(units):
        unit_id = f"shard-{unit:05d}"
        with UnitWriter(root, unit_id, config={"test": True}, row_group_rows=row_group_rows) as writer:
            for position, sample in enumerate(pool[unit * chunk:(unit + 1) * chunk], start=unit * chunk):
                row = sample.to_row()
                if mutate is not None:
                    mutate(position, row)
                writer.write(row)
            for q in range(quarantine):
                writer.quarantine(f"file:///bad/{unit}-{q}.mp4", "zero-length file", "probe")
    write_manifest(root)
    return root


def rows_by_id(root: str | Path) -> dict[str, dict[str, Any]]:
    """Every row of a dataset root, by sample id."""
    return {row["sample_id"]: row for row in read_table(root).to_pylist()}
