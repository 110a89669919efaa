"""Box geometry and instance colours, shared by annotation, rows, renders, the VLM prompt and training.

Boxes are xyxy normalised to [0, 1] of the frame they belong to. A trajectory is a list of keyframes
(strictly increasing frame indices) with one box each; `boxes_at` reads it at any frames.

One rounding rule maps a box to pixels (`to_pixels`): the pixels the box touches, i.e. the floor of
its start and the ceiling of its end in pixel units, end-exclusive (`array[y0:y1, x0:x1]` is the box
region), clipped to the frame and at least one pixel wide and high. A tolerance of 1e-3 px keeps a box
that lies on pixel edges (from a mask, or stored as float32) from gaining or losing a pixel. PIL
rectangles include their end point, so drawing code outlines `(x0, y0, x1 - 1, y1 - 1)`.

One palette gives instance k the same colour everywhere: the box the VLM is told to look at ("the
blue box"), the report's thumbnails and captions, and renders.
"""

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

Box = tuple[float, float, float, float]
"""A normalised xyxy box (x0, y0, x1, y1)."""
BoxLike = Sequence[float] | NDArray[Any]
"""Anything holding four numbers x0, y0, x1, y1 (a Box, a row's list, an array)."""
BoxMode = Literal["exact", "hold", "interpolate"]

PIXEL_TOLERANCE = 1e-3
"""Pixels: a box edge this close to a pixel edge counts as on it (float32 boxes of 4K frames stay exact)."""


def as_box(values: BoxLike) -> Box:
    """Four floats (x0, y0, x1, y1) from any sequence or array of four numbers."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(values, dtype=np.float64).reshape(4))
    return (x0, y0, x1, y1)


def box_area(box: BoxLike) -> float:
    """Area of an xyxy box (0 for degenerate boxes)."""
    x0, y0, x1, y1 = as_box(box)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def clip_boxes(boxes: NDArray[Any] | Sequence[BoxLike]) -> NDArray[Any]:
    """(N, 4) float32 normalised xyxy boxes clipped to [0, 1], with x0 <= x1 and y0 <= y1."""
    boxes = np.clip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)
    return np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)


def cxcywh_to_xyxy(boxes: NDArray[Any] | Sequence[BoxLike]) -> NDArray[Any]:
    """Centre-size boxes (..., 4) to corner boxes (..., 4), float32, same units."""
    boxes = np.asarray(boxes, dtype=np.float32)
    centre, size = boxes[..., :2], boxes[..., 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def box_iou(a: NDArray[Any] | Sequence[BoxLike], b: NDArray[Any] | Sequence[BoxLike]) -> NDArray[Any]:
    """Pairwise IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4); one box may be passed as (4,).

    Degenerate boxes have area 0; a pair whose union is empty has IoU 0 (two empty boxes do not match).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: NDArray[Any] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def grow_box(box: BoxLike, fraction: float) -> Box:
    """The box grown by `fraction` of its width and height on each side (not clipped)."""
    x0, y0, x1, y1 = as_box(box)
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def to_pixels(box: BoxLike, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x0, y0, x1, y1) of a normalised box: end-exclusive, inside the frame,
    at least one pixel (the rounding rule in the module docstring)."""
    bx0, by0, bx1, by1 = as_box(box)
    x0 = min(max(int(np.floor(bx0 * width + PIXEL_TOLERANCE)), 0), width - 1)
    y0 = min(max(int(np.floor(by0 * height + PIXEL_TOLERANCE)), 0), height - 1)
    x1 = min(max(int(np.ceil(bx1 * width - PIXEL_TOLERANCE)), x0 + 1), width)
    y1 = min(max(int(np.ceil(by1 * height - PIXEL_TOLERANCE)), y0 + 1), height)
    return x0, y0, x1, y1


def boxes_at(keyframes: Sequence[int] | NDArray[Any], boxes: NDArray[Any] | Sequence[BoxLike],
             frames: Sequence[int] | NDArray[Any], *,
             mode: BoxMode = "exact") -> tuple[NDArray[Any], NDArray[Any]]:
    """A trajectory read at `frames`: boxes (T, 4) float64 and a (T,) bool mask of frames where it is present.

    `keyframes` are the trajectory's frame indices (strictly increasing) and `boxes` one xyxy box each.
    - "exact": present on keyframes only, with their boxes (what an annotator produced).
    - "hold": present from the first to the last keyframe; between keyframes the previous box holds.
    - "interpolate": present from the first to the last keyframe; between keyframes the box moves linearly.
    Where the instance is absent the row still holds a box, the nearest one in time that the mode would
    show (the first keyframe's before the span, the last one's after it), so every row can be cropped.
    A trajectory without keyframes is absent everywhere (rows of zeros).
    """
    keys = np.asarray(keyframes, dtype=np.int64).reshape(-1)
    keyed = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    at = np.asarray(frames, dtype=np.int64).reshape(-1)
    if len(keys) != len(keyed):
        raise ValueError(f"trajectory needs one box per frame index: {len(keys)} indices, {len(keyed)} boxes")
    if np.any(np.diff(keys) <= 0):
        raise ValueError(f"trajectory frame indices must increase strictly: {keys.tolist()}")
    if len(keys) == 0:
        return np.zeros((len(at), 4)), np.zeros(len(at), dtype=bool)
    previous = np.clip(np.searchsorted(keys, at, side="right") - 1, 0, len(keys) - 1)
    if mode == "interpolate":
        # np.interp holds the end values outside [keys[0], keys[-1]]: the nearest-box fill.
        out = np.stack([np.interp(at, keys, keyed[:, c]) for c in range(4)], axis=1)
    elif mode in ("exact", "hold"):
        out = keyed[previous]
    else:
        raise ValueError(f"unknown box mode {mode!r} (exact, hold, interpolate)")
    present = keys[previous] == at if mode == "exact" else (at >= keys[0]) & (at <= keys[-1])
    return out, present


def box_at(keyframes: Sequence[int] | NDArray[Any], boxes: NDArray[Any] | Sequence[BoxLike], frame: int, *,
           mode: BoxMode = "exact") -> Box | None:
    """A trajectory's box at one frame (see `boxes_at` for the modes), or None where it is absent."""
    out, present = boxes_at(keyframes, boxes, [frame], mode=mode)
    return as_box(out[0]) if present[0] else None


class Colour(NamedTuple):
    """A palette colour: the name the VLM prompt uses and the RGB that renders draw."""

    name: str
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        """CSS hex string, e.g. '#e6194b'."""
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


# Distinct, saturated colours (Sasha Trubetskoy's list). Common names come first: a VLM follows
# "the blue box" more reliably than "the lavender box", and most clips have few instances.
PALETTE: tuple[Colour, ...] = (
    Colour("red", (230, 25, 75)), Colour("green", (60, 180, 75)), Colour("blue", (0, 130, 200)),
    Colour("orange", (245, 130, 48)), Colour("purple", (145, 30, 180)), Colour("cyan", (70, 240, 240)),
    Colour("magenta", (240, 50, 230)), Colour("yellow", (255, 225, 25)), Colour("lime", (210, 245, 60)),
    Colour("pink", (250, 190, 212)), Colour("teal", (0, 128, 128)), Colour("lavender", (220, 190, 255)),
)
"""Instance k gets PALETTE[k % len(PALETTE)]."""


def instance_colour(instance_id: int) -> Colour:
    """The colour of an instance id (stable across frames, prompts, thumbnails and renders)."""
    return PALETTE[int(instance_id) % len(PALETTE)]


def instance_hex(instance_id: int) -> str:
    """The instance's colour as a CSS hex string, for caption text in HTML."""
    return instance_colour(instance_id).hex


def label_text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tags, white on dark ones, so "ID: k" labels stay readable on every palette colour."""
    return (0, 0, 0) if sum(rgb) > 382 else (255, 255, 255)
