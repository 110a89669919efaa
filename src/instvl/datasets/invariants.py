"""Row invariants of the InstVL shard format: what must hold inside one sample and its instances.

Each check yields `Problem(instance_id, rule, message)`; the validator adds the shard path and the
sample id. Rules are short stable names (see `ROW_RULES`) so tests and tools can match on them.
"""

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from instvl.datasets.records import rle_pixels
from instvl.datasets.schema import (
    MEDIA_TYPES,
    QC_STATUSES,
    SPLITS,
    InstanceRow,
    QCRow,
    SampleRow,
    TrajectoryRow,
)

ROW_RULES = {
    "media_type": f"media_type is one of {MEDIA_TYPES}",
    "size": "width and height are positive",
    "fps": "videos have a positive fps",
    "num_frames": "num_frames is positive (1 for images)",
    "global_caption": "the global caption is not empty",
    "qc_status": f"qc.status is one of {QC_STATUSES}",
    "split": f"split is one of {SPLITS}",
    "instance_id_unique": "instance ids are unique within a sample",
    "instance_caption": "every instance caption is not empty",
    "list_lengths": "trajectory box/score/mask_rle lists match frame_index (score and mask_rle may be empty)",
    "frame_range": "frame indices lie inside the clip (0 <= i < num_frames)",
    "frame_order": "frame indices are strictly increasing",
    "image_frames": "image instances have the single frame index 0",
    "box_range": "box coordinates lie in [0, 1]",
    "box_order": "boxes have x0 <= x1 and y0 <= y1",
    "mask_size": "every stored mask RLE covers the row's height x width pixels (schema 1.1)",
}
"""Rule name -> what it requires, for every row-level rule."""

ROW_COLUMNS = ["sample_id", "media_type", "width", "height", "fps", "num_frames", "global_caption",
               "instances", "qc", "split"]
"""The columns the row checks read (never the media bytes)."""


class Problem(NamedTuple):
    instance_id: int | None
    rule: str
    message: str


def check_row(row: SampleRow) -> Iterator[Problem]:
    """Every invariant violated by one row dict (as `to_pylist()` returns it)."""
    yield from check_sample_fields(row)
    instances = row.get("instances") or []
    counts = Counter(inst.get("instance_id") for inst in instances)
    for instance_id, count in counts.items():
        if count > 1:
            yield Problem(instance_id, "instance_id_unique", f"instance id {instance_id} used {count} times")
    for inst in instances:
        yield from check_instance(inst, row)


def check_sample_fields(row: SampleRow) -> Iterator[Problem]:
    media_type = row.get("media_type")
    if media_type not in MEDIA_TYPES:
        yield Problem(None, "media_type", f"media_type {media_type!r} is not one of {list(MEDIA_TYPES)}")
    for name in ("width", "height"):
        if not _positive(row.get(name)):
            yield Problem(None, "size", f"{name} {row.get(name)!r} is not positive")
    if media_type == "video" and not _positive(row.get("fps")):
        yield Problem(None, "fps", f"video fps {row.get('fps')!r} is not positive")
    num_frames = row.get("num_frames")
    if not _positive(num_frames) or (media_type == "image" and num_frames != 1):
        yield Problem(None, "num_frames", f"num_frames {num_frames!r} is not valid for a {media_type}")
    if not (row.get("global_caption") or "").strip():
        yield Problem(None, "global_caption", "global caption is empty")
    qc: QCRow = row.get("qc") or {}
    status = qc.get("status")
    if status not in QC_STATUSES:
        yield Problem(None, "qc_status", f"qc.status {status!r} is not one of {list(QC_STATUSES)}")
    if row.get("split") not in SPLITS:
        yield Problem(None, "split", f"split {row.get('split')!r} is not one of {list(SPLITS)}")


def check_instance(inst: InstanceRow, row: SampleRow) -> Iterator[Problem]:
    instance_id = inst.get("instance_id")
    if not (inst.get("caption") or "").strip():
        yield Problem(instance_id, "instance_caption", "instance caption is empty")
    empty: TrajectoryRow = {"frame_index": [], "box": [], "mask_rle": [], "score": []}
    traj = inst.get("trajectory") or empty
    frames = list(traj.get("frame_index") or [])
    for problem in check_list_lengths(traj, len(frames)):
        yield Problem(instance_id, "list_lengths", problem)
    for rule, message in check_frames(frames, row):
        yield Problem(instance_id, rule, message)
    for rule, message in check_boxes(frames, list(traj.get("box") or [])):
        yield Problem(instance_id, rule, message)
    for message in check_mask_sizes(list(traj.get("mask_rle") or []), row):
        yield Problem(instance_id, "mask_size", message)


def check_mask_sizes(masks: list[str], row: SampleRow) -> Iterator[str]:
    """Masks encoded at another size than the row's media (a 1.0 row with an odd annotation-frame side)."""
    height, width = row.get("height") or 0, row.get("width") or 0
    if not masks or not _positive(height) or not _positive(width):
        return
    wrong = [k for k, counts in enumerate(masks) if counts and _pixels(counts) != height * width]
    if wrong:
        yield f"mask RLEs at positions {_short(wrong)} do not cover the row's {width}x{height} pixels"


def check_list_lengths(traj: TrajectoryRow, num_frames: int) -> Iterator[str]:
    boxes = traj.get("box") or []
    if len(boxes) != num_frames:
        yield f"{len(boxes)} boxes for {num_frames} frame indices"
    for name, values in (("score", traj.get("score") or []), ("mask_rle", traj.get("mask_rle") or [])):
        if values and len(values) != num_frames:
            yield (f"{len(values)} trajectory {name} values for {num_frames} frame indices "
                   f"(expected 0 or {num_frames})")


def check_frames(frames: list[int], row: SampleRow) -> Iterator[tuple[str, str]]:
    """Clip frames (`records.FrameSpace.CLIP`) inside the clip, strictly increasing; [0] for images."""
    if row.get("media_type") == "image":
        if frames != [0]:
            yield "image_frames", f"image instance has frame indices {_short(frames)} (expected [0])"
        return
    num_frames = row.get("num_frames")
    limit = num_frames if num_frames is not None and _positive(num_frames) else None
    outside = [i for i in frames if i < 0 or (limit is not None and i >= limit)]
    if outside:
        yield "frame_range", f"frame index {outside[0]} is outside the clip (0 <= i < {num_frames})"
    backwards = [(a, b) for a, b in zip(frames, frames[1:], strict=False) if b <= a]
    if backwards:
        a, b = backwards[0]
        yield "frame_order", f"frame indices are not strictly increasing ({a} then {b})"


def check_boxes(frames: list[int], boxes: list[list[float]]) -> Iterator[tuple[str, str]]:
    """The first bad box for each of box_range and box_order (one message per rule, not per frame)."""
    found: dict[str, str] = {}
    for position, box in enumerate(boxes):
        frame = frames[position] if position < len(frames) else position
        shown = f"frame {frame}: box {_rounded(box)}"
        if "box_range" not in found and not all(_finite(v) and 0.0 <= v <= 1.0 for v in box):
            found["box_range"] = f"{shown} is outside [0, 1]"
        if "box_order" not in found and all(_finite(v) for v in box):
            x0, y0, x1, y1 = box
            if x0 > x1 or y0 > y1:
                found["box_order"] = f"{shown} has {'x0 > x1' if x0 > x1 else 'y0 > y1'}"
        if len(found) == 2:
            break
    yield from found.items()


def _pixels(counts: str) -> int | None:
    try:
        return rle_pixels(counts)
    except ValueError:
        return None


def _positive(value: Any) -> bool:
    return value is not None and _finite(value) and value > 0


def _finite(value: Any) -> bool:
    return value is not None and not math.isnan(value) and not math.isinf(value)


def _rounded(box: list[float]) -> list[float]:
    return [round(float(v), 4) if _finite(v) else v for v in box]


def _short(values: list[int], limit: int = 6) -> str:
    return str(values) if len(values) <= limit else f"[{', '.join(map(str, values[:limit]))}, ...]"
