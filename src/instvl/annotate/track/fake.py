"""A deterministic tracker without a model: appearance template matching.

A real (if simple) tracker: each object's pixels on the seed frame become a template that is searched for
near its constant-velocity prediction on every later frame; a poor match (e.g. an occluded object) marks
the object lost on that frame while its position coasts on. (Ground-truth tracking for measuring the
trajectory builder: `instvl.testing.oracle.OracleTracker`.)
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np

from instvl.annotate.track.base import start_tracking
from instvl.annotate.tracks import TrackedFrame, TrackedObject, TrackSeed
from instvl.config import BaseConfig
from instvl.deps import require
from instvl.geometry import to_pixels


class FakeTracker:
    """Template-matching tracking, deterministic and CPU-cheap."""

    class Config(BaseConfig):
        kind: Literal["fake"] = "fake"
        mode: Literal["template"] = "template"
        """How objects are followed (the only way; recorded in provenance as `fake:template`)."""
        search: float = 0.5
        """Search radius around the predicted position, as a fraction of the box's larger side."""
        min_score: float = 0.9
        """Match similarity (1 - RMS pixel difference / 255) below which the object is lost."""
        max_coast: int = 8
        """Frames a lost object's position keeps moving at its last velocity."""

        def build(self) -> "FakeTracker":
            return FakeTracker(self)

    model_id = "fake"

    def __init__(self, config: Config | None = None):
        self.config = config or FakeTracker.Config()

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        video, out = start_tracking(frames, seeds)
        for seed in seeds:
            for tracked, obj in zip(out, self._follow(video, seed), strict=True):
                tracked.objects[seed.obj_id] = obj
        return out

    def _follow(self, video: np.ndarray, seed: TrackSeed) -> list[TrackedObject]:
        cv2 = require("cv2", "video")
        height, width = video.shape[1:3]
        x0, y0, x1, y1 = to_pixels(seed.box_xyxy, width, height)
        template = video[0, y0:y1, x0:x1].astype(np.float32)
        h, w = template.shape[:2]
        weights = np.repeat(foreground_mask(template)[..., None], 3, axis=2).astype(np.float32)
        pos, velocity, coasting = np.array([x0, y0], float), np.zeros(2), 0
        objects = [TrackedObject(seed.obj_id, _norm_box(pos, w, h, width, height), 1.0)]
        radius = max(2, int(np.ceil(self.config.search * max(w, h))))
        for frame in video[1:]:
            guess = pos + velocity
            found, score = _match(cv2, frame, template, weights, guess, radius)
            if found is not None and score >= self.config.min_score:
                velocity, pos, coasting = found - pos, found, 0
                objects.append(TrackedObject(seed.obj_id, _norm_box(pos, w, h, width, height), score))
            else:
                coasting += 1
                pos = guess if coasting <= self.config.max_coast else pos
                objects.append(TrackedObject(seed.obj_id, None, 0.0))
        return objects


def _match(cv2, frame: np.ndarray, template: np.ndarray, weights: np.ndarray, guess: np.ndarray, radius: int):
    """Best top-left position of `template` (its foreground pixels only) within `radius` pixels of
    `guess`, and its similarity 1 - RMS difference / 255."""
    h, w = template.shape[:2]
    height, width = frame.shape[:2]
    gx, gy = int(round(guess[0])), int(round(guess[1]))
    rx0, ry0 = max(0, gx - radius), max(0, gy - radius)
    rx1, ry1 = min(width, gx + w + radius), min(height, gy + h + radius)
    if rx1 - rx0 < w or ry1 - ry0 < h:
        return None, 0.0
    region = frame[ry0:ry1, rx0:rx1].astype(np.float32)
    sqdiff = cv2.matchTemplate(region, template, cv2.TM_SQDIFF, mask=weights)
    _, _, best, _ = cv2.minMaxLoc(sqdiff)  # the minimum of squared differences
    rms = np.sqrt(max(float(sqdiff[best[1], best[0]]), 0.0) / weights.sum())
    return np.array([rx0 + best[0], ry0 + best[1]], float), float(1.0 - rms / 255.0)


def foreground_mask(crop: np.ndarray, min_distance: float = 40.0, min_fraction: float = 0.1) -> np.ndarray:
    """Pixels of a box crop that differ from its border's median colour: the object, not the background
    showing around (or through) it. The whole box when too little stands out."""
    border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    distance = np.linalg.norm(crop - np.median(border, axis=0), axis=2)
    mask = distance > min_distance
    if mask.mean() < min_fraction:
        return np.ones(crop.shape[:2], bool)
    # Of what stands out, keep the pixels nearer the crop's centre colour than the background: an
    # occluder entering the box at its edge is not part of the object.
    h, w = mask.shape
    centre = crop[h // 4: h - h // 4, w // 4: w - w // 4][mask[h // 4: h - h // 4, w // 4: w - w // 4]]
    if len(centre) == 0:
        return mask
    own = np.linalg.norm(crop - np.median(centre, axis=0), axis=2)
    refined = mask & (own < distance)
    return refined if refined.mean() >= min_fraction else mask


def _norm_box(pos: np.ndarray, w: int, h: int, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0 = float(pos[0]), float(pos[1])
    return (max(0.0, x0 / width), max(0.0, y0 / height),
            min(1.0, (x0 + w) / width), min(1.0, (y0 + h) / height))
