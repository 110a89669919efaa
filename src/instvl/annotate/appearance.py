"""Appearance cue of the trajectory builder: what a box looks like, and whether two boxes look alike.

A look is a normalised joint RGB histogram of a box's pixels; two looks are compared by their
Bhattacharyya coefficient (1: the same colours, 0: disjoint). It is cheap, needs no model and does not
care about the object's pose or a few pixels of box jitter, which is what the builder needs to tell an
object from a different-looking one: to revive a lost track by its looks, to refuse a match of a track
the detector has not confirmed lately to a detection that looks unlike it, and to notice that the
tracker drifted off its object. Objects of the same colours look alike to it; the builder's motion and
label cues have to separate those.
"""

import numpy as np

from instvl.geometry import Box, to_pixels


def appearance(frame: np.ndarray, box: Box, bins: int = 8) -> np.ndarray:
    """A normalised joint RGB histogram (bins^3) of the box's pixels on `frame` (RGB uint8 (H, W, 3))."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = to_pixels(box, width, height)
    crop = frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)].reshape(-1, 3).astype(np.int64) * bins // 256
    counts = np.bincount((crop[:, 0] * bins + crop[:, 1]) * bins + crop[:, 2], minlength=bins ** 3)
    return counts / max(counts.sum(), 1)


def look_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient of two appearance histograms: 1 for the same colours, 0 for disjoint."""
    return float(np.sqrt(a * b).sum())


def blend(look: np.ndarray | None, new: np.ndarray, weight: float) -> np.ndarray:
    """A running look: `new` weighted `weight` into `look` (the first look as it is)."""
    return new if look is None else (1 - weight) * look + weight * new
