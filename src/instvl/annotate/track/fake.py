"""A deterministic tracker without a model: appearance template matching.

A real (if simple) tracker. Each object's pixels on the seed frame (its foreground within the box)
become a template, searched for on every later frame around a constant-velocity prediction, within a
radius that grows with the object's speed and with every frame it stays lost. The match minimises the
mean colour difference over the template's pixels that fall inside the frame, so an object entering or
leaving the frame is still found. Its score is the share of the template's pixels seen again (colour
within `inlier_distance`; pixels outside the frame or hidden behind an occluder do not count), rescaled
so that `min_score` maps to 0 and a perfect match to 1; below `min_score` the object is lost on that
frame while its position coasts on. (Ground-truth tracking for measuring the trajectory builder:
`instvl.testing.oracle.OracleTracker`.)
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
        """Search radius around the predicted position, as a fraction of the box's larger side ..."""
        search_speed: float = 2.0
        """... or this many times the object's last speed (pixels per frame), whichever is larger."""
        search_growth: float = 0.25
        """Per frame lost, the radius grows by this fraction of the box's larger side."""
        min_score: float = 0.5
        """Share of the template's pixels seen again at or below which the object is lost (score 0)."""
        inlier_distance: float = 60.0
        """Colour distance (RGB, 0-255) within which a template pixel counts as seen again."""
        motion_prior: float = 4.0
        """Weight of the distance from the predicted position: the match cost is multiplied by
        1 + motion_prior * (distance / radius)^2, so of two similar candidates the expected one wins."""
        min_inside: float = 0.3
        """Positions where less of the template than this lies inside the frame are not considered."""
        candidates: int = 2
        """Lowest-cost positions compared by the share of the template seen again there."""
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
        cfg = self.config
        height, width = video.shape[1:3]
        x0, y0, x1, y1 = to_pixels(seed.box_xyxy, width, height)
        template = video[0, y0:y1, x0:x1].astype(np.float32)
        h, w = template.shape[:2]
        weights = foreground_mask(template).astype(np.float32)
        # The builder's velocity, when it gives one, lets the motion prior work from the first frame.
        moving = seed.velocity is not None
        velocity = np.array(seed.velocity or (0.0, 0.0), float) * (width, height)
        pos, lost = np.array([x0, y0], float), 0
        last_found = pos  # where the object was last seen, `lost` + 1 frames before this one
        objects = [TrackedObject(seed.obj_id, _norm_box(pos, w, h, width, height), 1.0)]
        for frame in video[1:]:
            guess = pos + velocity
            radius = int(np.ceil(max(cfg.search * max(w, h), cfg.search_speed * np.abs(velocity).max())
                                 + cfg.search_growth * max(w, h) * lost)) + 1
            # The motion prior only once a velocity is known (the seed frame gives none).
            found, seen = _match(cv2, frame, template, weights, guess, radius, cfg.motion_prior * moving, cfg)
            if found is not None and seen > cfg.min_score:
                velocity = (found - last_found) / (lost + 1)
                pos = last_found = found
                lost, moving = 0, True
                score = (seen - cfg.min_score) / max(1.0 - cfg.min_score, 1e-6)
                objects.append(TrackedObject(seed.obj_id, _norm_box(pos, w, h, width, height), score))
            else:
                lost += 1
                pos = guess if lost <= cfg.max_coast else pos
                objects.append(TrackedObject(seed.obj_id, None, 0.0))
        return objects


def _match(cv2, frame: np.ndarray, template: np.ndarray, weights: np.ndarray, guess: np.ndarray,
           radius: int, prior: float, cfg: FakeTracker.Config) -> tuple[np.ndarray | None, float]:
    """Best top-left position of `template` within `radius` pixels of `guess` (it may overhang the frame)
    and the share of its foreground (`weights`) seen there again.

    The cost of a position is the mean squared colour difference over the template's foreground, a
    fixed cost for its pixels outside the frame; it is computed for every position at once from
    correlations (|I - T|^2 = I^2 - 2 I T + T^2)."""
    h, w = template.shape[:2]
    height, width = frame.shape[:2]
    gx, gy = int(round(guess[0])), int(round(guess[1]))
    rx0, ry0, rx1, ry1 = gx - radius, gy - radius, gx + w + radius, gy + h + radius
    # The search region, zero (and invalid) where it overhangs the frame.
    region = np.zeros((ry1 - ry0, rx1 - rx0, 3), np.float32)
    inside = np.zeros(region.shape[:2], np.float32)
    fx0, fy0, fx1, fy1 = max(rx0, 0), max(ry0, 0), min(rx1, width), min(ry1, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return None, 0.0
    region[fy0 - ry0:fy1 - ry0, fx0 - rx0:fx1 - rx0] = frame[fy0:fy1, fx0:fx1].astype(np.float32) - 128.0
    inside[fy0 - ry0:fy1 - ry0, fx0 - rx0:fx1 - rx0] = 1.0
    centred = template - 128.0
    corr = lambda image, kernel: cv2.matchTemplate(image, kernel, cv2.TM_CCORR)  # noqa: E731
    count = corr(inside, weights)
    sqdiff = (corr((region ** 2).sum(axis=2), weights) - 2 * corr(region, centred * weights[..., None])
              + corr(inside, (centred ** 2).sum(axis=2) * weights))
    # A template pixel outside the frame costs as much as one barely seen again, so a position inside
    # the frame wins over an overhanging one that matches as well where it overlaps the frame.
    total = weights.sum()
    unseen = (total - count) * cfg.inlier_distance ** 2
    cost = np.where(count >= cfg.min_inside * total, (np.maximum(sqdiff, 0.0) + unseen) / total, np.inf)
    if prior:
        offset = np.hypot(*np.meshgrid(np.arange(cost.shape[1]) - radius, np.arange(cost.shape[0]) - radius))
        cost = cost * (1 + prior * (offset / radius) ** 2)
    # Of the cheapest positions, the one where most of the template is seen again: squared differences
    # alone favour shifting a partly hidden object away from its occluder.
    order = np.argsort(cost, axis=None, kind="stable")[:cfg.candidates]
    best, seen = None, -1.0
    for flat in order:
        by, bx = np.unravel_index(int(flat), cost.shape)
        if not np.isfinite(cost[by, bx]):
            break
        patch, valid = region[by:by + h, bx:bx + w], inside[by:by + h, bx:bx + w] > 0
        close = np.linalg.norm(patch - centred, axis=2) < cfg.inlier_distance
        share = float((close & valid & (weights > 0)).sum() / max(weights.sum(), 1.0))
        if share > seen:
            best, seen = (bx, by), share
    if best is None:
        return None, 0.0
    bx, by = best
    return np.array([rx0 + bx, ry0 + by], float), seen


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
