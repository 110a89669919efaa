"""Instance geometry for training: trajectory boxes at the sampled frames and the per-frame crop clips.

Boxes are xyxy normalised to [0, 1]. A trajectory gives boxes at its keyframes; at a sampled frame
inside the track's span the box is interpolated linearly between the neighbouring keyframes, outside
it the nearest keyframe's box is used and the frame is marked absent.
"""

import numpy as np


def interpolate_boxes(frame_index, boxes, sampled) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (T, 4) at the `sampled` frame indices and a (T,) mask of frames inside the track's span."""
    keys = np.asarray(frame_index, dtype=np.float64)
    keyed = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(keys) == 0 or len(keys) != len(keyed):
        raise ValueError(f"trajectory needs as many boxes as frame indices (got {len(keys)} and {len(keyed)})")
    if np.any(np.diff(keys) <= 0):
        raise ValueError(f"trajectory frame indices must increase strictly: {keys.astype(int).tolist()}")
    at = np.asarray(sampled, dtype=np.float64)
    # np.interp holds the end values outside [keys[0], keys[-1]]: the nearest-box fill we want.
    out = np.stack([np.interp(at, keys, keyed[:, c]) for c in range(4)], axis=1)
    present = (at >= keys[0]) & (at <= keys[-1])
    return out.astype(np.float32), present


def single_boxes(boxes, num: int) -> tuple[np.ndarray, np.ndarray]:
    """The trajectory's first box repeated for all `num` frames (the 'single box' ablation), all present."""
    first = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[0]
    return np.repeat(first[None], num, axis=0), np.ones(num, dtype=bool)


def to_window(boxes: np.ndarray, window: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes re-expressed in a crop window of the frame (both normalised), clipped to it.

    Returns the boxes and a mask of boxes that keep a positive area inside the window.
    """
    x0, y0, x1, y1 = window
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=np.float32)
    moved = (boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) / scale
    moved = np.clip(moved, 0.0, 1.0)
    visible = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return moved.astype(np.float32), visible


def pixel_window(box, height: int, width: int, pad: float) -> tuple[int, int, int, int]:
    """Integer (top, bottom, left, right) of a normalised box grown by `pad` of its size, inside the frame."""
    bx0, by0, bx1, by1 = (float(v) for v in box)
    grow_x, grow_y = (bx1 - bx0) * pad, (by1 - by0) * pad
    left = int(np.floor(np.clip(bx0 - grow_x, 0, 1) * width))
    right = int(np.ceil(np.clip(bx1 + grow_x, 0, 1) * width))
    top = int(np.floor(np.clip(by0 - grow_y, 0, 1) * height))
    bottom = int(np.ceil(np.clip(by1 + grow_y, 0, 1) * height))
    left, top = min(left, width - 1), min(top, height - 1)
    return top, max(bottom, top + 1), left, max(right, left + 1)


def crop_clip(frames, boxes: np.ndarray, size: int, pad: float):
    """One instance's crop clip (3, T, size, size) from frames (T, 3, H, W), one padded box per frame."""
    import torch
    import torch.nn.functional as F

    height, width = frames.shape[-2:]
    crops = []
    for t, box in enumerate(boxes):
        top, bottom, left, right = pixel_window(box, height, width, pad)
        patch = frames[t:t + 1, :, top:bottom, left:right]
        crops.append(F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False))
    return torch.cat(crops).transpose(0, 1)
