"""Instance geometry for training: boxes in a crop window, and the per-frame crop clips.

Boxes are xyxy normalised to [0, 1]. The boxes at the sampled frames come from
`geometry.boxes_at(..., mode="interpolate")`: linear between keyframes, the nearest keyframe's box
outside the track's span (where the frame is marked absent).
"""

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from instvl.geometry import grow_box, to_pixels
from instvl.media.decode import resize_to


def single_boxes(boxes: ArrayLike, num: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """The trajectory's first box repeated for all `num` frames (the 'single box' ablation), all present."""
    first = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[0]
    return np.repeat(first[None], num, axis=0), np.ones(num, dtype=bool)


def to_window(boxes: NDArray[Any],
              window: tuple[float, float, float, float]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Boxes re-expressed in a crop window of the frame (both normalised), clipped to it.

    Returns the boxes and a mask of boxes that keep a positive area inside the window.
    """
    x0, y0, x1, y1 = window
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=np.float32)
    moved = (boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) / scale
    moved = np.clip(moved, 0.0, 1.0)
    visible = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return moved.astype(np.float32), visible


def crop_clip(frames: NDArray[Any], boxes: NDArray[Any], size: int, pad: float) -> NDArray[Any]:
    """One instance's crop clip (T, size, size, 3) uint8 from frames (T, H, W, 3), one box per frame grown
    by `pad` of its size on each side (pixels by `geometry.to_pixels`), resized with OpenCV."""
    height, width = frames.shape[1:3]
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for t, box in enumerate(boxes):
        x0, y0, x1, y1 = to_pixels(grow_box(box, pad), width, height)
        out[t] = resize_to(np.ascontiguousarray(frames[t, y0:y1, x0:x1]), size, size)
    return out
