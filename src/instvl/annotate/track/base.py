"""The Tracker protocol and helpers shared by tracker backends (frame checks, mask -> box).

A tracker call covers one window: box prompts (`TrackSeed`) on the window's first frame, propagation
through every frame of the window, one `TrackedFrame` per frame. Backends keep no state between calls,
so the caller bounds memory by choosing the window length and carries identities over by re-seeding.
"""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from instvl.annotate.types import Box, TrackedFrame, TrackSeed


@runtime_checkable
class Tracker(Protocol):
    """Video object tracker prompted with boxes on the first frame of a window."""

    def track(self, frames: np.ndarray | Sequence[np.ndarray], seeds: Sequence[TrackSeed], *,
              frame_indices: Sequence[int] | None = None) -> list[TrackedFrame]:
        """Propagate `seeds` (boxes on frames[0]) through `frames`; returns one TrackedFrame per frame.

        `frame_indices` gives each frame's index in its clip (default 0..T-1); the returned
        TrackedFrame.frame_index uses the same numbering.
        """
        ...


def as_video(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Frames as one (T, H, W, 3) uint8 array, or a clear error saying what is wrong with them."""
    video = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if video.ndim != 4 or video.shape[3] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"expected a non-empty (T, H, W, 3) uint8 video, got {video.dtype} {video.shape}")
    return video


def resolve_indices(num_frames: int, frame_indices: Sequence[int] | None) -> list[int]:
    """Clip frame indices of a window: the given ones (checked) or 0..T-1."""
    if frame_indices is None:
        return list(range(num_frames))
    if len(frame_indices) != num_frames:
        raise ValueError(f"got {len(frame_indices)} frame indices for {num_frames} frames")
    return [int(i) for i in frame_indices]


def start_tracking(frames: np.ndarray | Sequence[np.ndarray], seeds: Sequence[TrackSeed],
                   frame_indices: Sequence[int] | None) -> tuple[np.ndarray, list[int], list[TrackedFrame]]:
    """What every tracker does first: the (T, H, W, 3) video, its frame indices, and empty results."""
    video = as_video(frames)
    indices = resolve_indices(len(video), frame_indices)
    check_seeds(seeds)
    return video, indices, [TrackedFrame(i) for i in indices]


def check_seeds(seeds: Sequence[TrackSeed]) -> None:
    """Object ids must be unique and boxes normalised xyxy."""
    ids = [s.obj_id for s in seeds]
    if len(set(ids)) != len(ids):
        raise ValueError(f"tracker seeds have duplicate object ids: {ids}")
    for seed in seeds:
        x0, y0, x1, y1 = seed.box_xyxy
        if not (0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1):
            raise ValueError(f"seed {seed.obj_id}: box {seed.box_xyxy} is not normalised xyxy in [0, 1]")


def mask_to_box(mask: np.ndarray) -> Box | None:
    """Tight normalised xyxy box of a (H, W) boolean mask (pixel edges, so a 1-pixel mask has area > 0);
    None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (float(cols[0] / w), float(rows[0] / h), float((cols[-1] + 1) / w), float((rows[-1] + 1) / h))


def box_to_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x0, y0, x1, y1), end-exclusive, at least one pixel, inside the frame."""
    eps = 1e-4  # normalised boxes of whole pixels must not gain or lose a pixel to rounding
    x0 = min(max(int(np.floor(box[0] * width + eps)), 0), width - 1)
    y0 = min(max(int(np.floor(box[1] * height + eps)), 0), height - 1)
    x1 = min(max(int(np.ceil(box[2] * width - eps)), x0 + 1), width)
    y1 = min(max(int(np.ceil(box[3] * height - eps)), y0 + 1), height)
    return x0, y0, x1, y1


def box_mask(box: Box, width: int, height: int) -> np.ndarray:
    """A (H, W) boolean mask filling `box`."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box_to_pixels(box, width, height)
    mask[y0:y1, x0:x1] = True
    return mask
