"""The Tracker protocol and helpers shared by tracker backends (frame checks, mask -> box).

A tracker call covers one window: box prompts (`TrackSeed`) on the window's first frame, propagation
through every frame of the window, one `TrackedFrame` per frame. Backends keep no state between calls,
so the caller bounds memory by choosing the window length and carries identities over by re-seeding.
"""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from instvl.annotate.tracks import TrackedFrame, TrackSeed
from instvl.geometry import Box, BoxLike, to_pixels


@runtime_checkable
class Tracker(Protocol):
    """Video object tracker prompted with boxes on the first frame of a window."""

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        """Propagate `seeds` (boxes on frames[0]) through `frames`; returns one TrackedFrame per frame.

        A tracker sees only its window: the returned frames are numbered 0..T-1 within it, and the
        caller, which knows where the window starts, places them among the frames it annotates.
        """
        ...


def as_video(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Frames as one (T, H, W, 3) uint8 array, or a clear error saying what is wrong with them."""
    video = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if video.ndim != 4 or video.shape[3] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"expected a non-empty (T, H, W, 3) uint8 video, got {video.dtype} {video.shape}")
    return video


def start_tracking(frames: np.ndarray | Sequence[np.ndarray],
                   seeds: Sequence[TrackSeed]) -> tuple[np.ndarray, list[TrackedFrame]]:
    """What every tracker does first: the (T, H, W, 3) video and its empty results, numbered 0..T-1."""
    video = as_video(frames)
    check_seeds(seeds)
    return video, [TrackedFrame(i) for i in range(len(video))]


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


def box_mask(box: BoxLike, width: int, height: int) -> np.ndarray:
    """A (H, W) boolean mask of the pixels `geometry.to_pixels` gives for `box` (`mask_to_box` inverts it)."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = to_pixels(box, width, height)
    mask[y0:y1, x0:x1] = True
    return mask
