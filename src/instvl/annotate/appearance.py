"""Appearance cue of the trajectory builder: what a box looks like, and whether two boxes look alike.

A look is a normalised joint RGB histogram of a box's pixels and the box's size (the log of its larger
side in pixels). Two looks are compared by the Bhattacharyya coefficient of their histograms (1: the
same colours, 0: disjoint) times a size factor, exp(-|log size ratio|) raised to `size_weight` (1 for
the same size; 0.82 at weight 0.5 for a box 1.5 times as large). The histogram is cheap, needs no model
and does not care about the object's pose or a few pixels of box jitter; the size separates look-alikes
of the same colours that a histogram cannot (a small and a large red square), which is what the builder
needs to revive a lost track by its looks, to refuse a match of a track the detector has not confirmed
lately to a detection that looks unlike it, to notice that the tracker drifted off its object, and to
stitch tracks of one object. Objects of the same colours and size still look alike to it; the builder's
motion and label cues have to separate those. (A grey-level patch or gradient-orientation histogram of
the box was weighed on the tracking benchmark's dev seeds and separated same-colour look-alikes less
than the size does: the background seen around and through an object changes as it moves.)
"""

from dataclasses import dataclass

import numpy as np

from instvl.geometry import Box, to_pixels


@dataclass(frozen=True)
class Look:
    """What a box looks like: its colours (normalised joint RGB histogram, bins^3) and log size."""

    colours: np.ndarray
    log_size: float
    """Natural log of the box's larger side in pixels."""


def appearance(frame: np.ndarray, box: Box, bins: int = 8) -> Look:
    """The look of the box's pixels on `frame` (RGB uint8 (H, W, 3))."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = to_pixels(box, width, height)
    crop = frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)].reshape(-1, 3).astype(np.int64) * bins // 256
    counts = np.bincount((crop[:, 0] * bins + crop[:, 1]) * bins + crop[:, 2], minlength=bins ** 3)
    return Look(counts / max(counts.sum(), 1), float(np.log(max(x1 - x0, y1 - y0, 1))))


def look_similarity(a: Look, b: Look, size_weight: float) -> float:
    """Bhattacharyya coefficient of the colour histograms (1 for the same colours, 0 for disjoint) times
    exp(-size_weight * |log size ratio|)."""
    return float(np.sqrt(a.colours * b.colours).sum() * np.exp(-size_weight * abs(a.log_size - b.log_size)))


def blend(look: Look | None, new: Look, weight: float) -> Look:
    """A running look: `new` weighted `weight` into `look` (the first look as it is)."""
    if look is None:
        return new
    return Look((1 - weight) * look.colours + weight * new.colours,
                (1 - weight) * look.log_size + weight * new.log_size)
