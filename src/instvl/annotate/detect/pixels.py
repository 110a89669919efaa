"""A CPU detector without weights: colour segmentation of flat, saturated objects, labelled from pixels.

Every frame is split into regions of one named colour (the colour or its darker shade, so striped,
checkered and dotted objects stay whole), closed morphologically, and each region of object size is
named "<colour> <shape>" from its silhouette (holes, fill of its box, convexity, corners). A query phrase
matches a region when each of its colour and shape words agrees with the region's name, and a generic
phrase ('object', 'shape', 'thing') matches every region. No model and no ground truth: this is what the
offline demo detects InstVL-Synth's coloured shapes with; on real footage it finds only flat colour
blobs, so it is not a general detector.

    >>> import numpy as np
    >>> frame = np.full((64, 64, 3), 128, np.uint8); frame[10:30, 20:40] = (220, 30, 30)
    >>> found = PixelDetector().detect([frame], ["red square"])[0]
    >>> [(d.phrase, [round(v, 2) for v in d.box_xyxy]) for d in found]
    [('red square', [0.31, 0.16, 0.62, 0.47])]
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from instvl.annotate.detect.base import check_frames, make_detections
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.tracks import Detection
from instvl.config import BaseConfig
from instvl.deps import require

NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 175, 50), "blue": (30, 70, 230), "yellow": (240, 220, 30),
    "orange": (250, 140, 20), "purple": (140, 50, 200), "pink": (250, 110, 190), "cyan": (30, 210, 220),
    "white": (245, 245, 245),
}
"""Saturated reference colours (and white) that regions are segmented and named by."""
SHAPE_NAMES = ("circle", "square", "triangle", "star", "ring", "diamond", "cross", "hexagon")
GENERIC_WORDS = frozenset({"object", "objects", "shape", "shapes", "thing", "things", "item", "blob"})
SHADE = 0.5
"""Textured objects alternate their colour with this fraction of it; both shades count as the colour."""


@dataclass(frozen=True, slots=True)
class Region:
    """One segmented object on one frame: its normalised xyxy box, colour, shape, mask and a confidence."""

    box_xyxy: tuple[float, float, float, float]
    colour: str
    shape: str
    score: float
    mask: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


class PixelDetector:
    """Open-vocabulary detection of flat coloured objects by colour segmentation (no weights)."""

    class Config(BaseConfig):
        kind: Literal["pixels"] = "pixels"
        colour_tolerance: float = 50.0
        """Largest RGB distance from a named colour (or its shade) for a pixel to count as that colour."""
        min_area: float = 0.003
        """Smallest region kept, as a fraction of the frame."""
        max_area: float = 0.3
        min_fill: float = 0.3
        """Smallest (region area / its box area): drops thin edges and scattered pixels."""
        min_bright: float = 0.4
        """Smallest fraction of a region in the full (not the dark) shade of its colour."""
        max_detections: int = 16

        def build(self) -> "PixelDetector":
            return PixelDetector(self)

    def __init__(self, config: Config | None = None):
        self.config = config or PixelDetector.Config()
        self._cv2 = require("cv2", "video")

    model_id = "colour-segmentation"

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        return self.detect_many(frames, [phrases] * len(frames))

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One phrase list per frame (`detect.base.MixedDetector`)."""
        check_frames(frames)
        out = []
        for frame, phrases in zip(frames, phrase_lists, strict=True):
            wanted = unique_phrases(phrases)
            found = []
            for region in self.regions(frame):
                phrase = match_phrase(region, wanted)
                if phrase is not None:
                    found.append((region, phrase))
            found.sort(key=lambda rp: -rp[0].score)
            found = found[: self.config.max_detections]
            boxes = np.array([r.box_xyxy for r, _ in found], np.float64).reshape(-1, 4)
            out.append(make_detections(boxes, np.array([r.score for r, _ in found]), [p for _, p in found]))
        return out

    def regions(self, frame: np.ndarray) -> list[Region]:
        """The object-sized regions of one named colour in an RGB frame, largest first."""
        cv2, c = self._cv2, self.config
        height, width = frame.shape[:2]
        pixels = frame.reshape(-1, 3).astype(np.float32)
        labels, shaded = nearest_colour(pixels, c.colour_tolerance)
        labels, shaded = labels.reshape(height, width), shaded.reshape(height, width)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        regions = []
        for index, colour in enumerate(NAMED_COLOURS):
            mask = (labels == index).astype(np.uint8)
            if mask.sum() < c.min_area * height * width:
                continue
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
            count, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for k in range(1, count):
                x, y, w, h, area = (int(v) for v in stats[k])
                fill = area / float(w * h)
                if not c.min_area <= area / (height * width) <= c.max_area or fill < c.min_fill:
                    continue
                if max(w, h) > 3 * min(w, h):
                    continue
                region_mask = comp == k
                # A painted object shows its full colour on most of it (textures add the dark shade);
                # shadows and dim photo regions match only the shade.
                if np.mean(~shaded[region_mask] & (labels[region_mask] == index)) < c.min_bright:
                    continue
                box = (x / width, y / height, (x + w) / width, (y + h) / height)
                regions.append(Region(box, colour, classify_shape(region_mask[y:y + h, x:x + w], cv2),
                                      round(min(1.0, 0.4 + 0.6 * fill), 3), region_mask))
        return sorted(regions, key=lambda r: -int(r.mask.sum()))


def nearest_colour(pixels: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Index into NAMED_COLOURS of each (N, 3) RGB pixel's colour (full or dark shade), -1 when none is
    within `tolerance`, and whether the dark shade is the nearer one. White's dark shade is plain grey,
    too common in photos to count."""
    refs = np.asarray(list(NAMED_COLOURS.values()), np.float32)
    shades = refs * SHADE
    dist = np.linalg.norm(pixels[:, None, :] - refs[None], axis=2)
    dist_dark = np.linalg.norm(pixels[:, None, :] - shades[None], axis=2)
    white = list(NAMED_COLOURS).index("white")
    dist_dark[:, white] = np.inf
    dist[:, white] *= 2.0  # bright skies, walls and paper are near-white: only pure white counts
    best = np.minimum(dist, dist_dark)
    index = best.argmin(axis=1)
    rows = np.arange(len(pixels))
    shaded = dist_dark[rows, index] < dist[rows, index]
    return np.where(best[rows, index] <= tolerance, index, -1), shaded


def classify_shape(mask: np.ndarray, cv2=None) -> str:
    """The name of a region's silhouette (a bool mask cropped to its box) among SHAPE_NAMES."""
    cv2 = cv2 or require("cv2", "video")
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outer = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, [outer], -1, 1, thickness=-1)
    filled_area = float(filled.sum())
    if (filled_area - float(m.sum())) / filled_area > 0.12:
        return "ring"
    h, w = m.shape
    fill = filled_area / float(h * w)
    hull = cv2.convexHull(outer)
    solidity = filled_area / max(1.0, _hull_area(hull, m.shape, cv2))
    aspect = h / w
    if solidity < 0.89:
        # Star boxes are a little wider than tall (five points); crosses are square.
        return "star" if aspect < 0.96 else "cross"
    if fill > 0.88:
        return "square"
    if fill < 0.66:
        return "triangle" if _lopsided(filled) else "diamond"
    # A hexagon (corners left and right, flat top and bottom) is wider than tall; a circle is not.
    return "hexagon" if aspect < 0.95 else "circle"


def _hull_area(hull: np.ndarray, shape: tuple[int, int], cv2) -> float:
    canvas = np.zeros(shape, np.uint8)
    cv2.drawContours(canvas, [hull], -1, 1, thickness=-1)
    return float(canvas.sum())


def _lopsided(filled: np.ndarray) -> bool:
    """True when the top and bottom thirds differ in width (a triangle), not mirror images (a diamond)."""
    widths = filled.sum(axis=1).astype(np.float64)
    third = max(1, len(widths) // 3)
    top, bottom = widths[:third].mean(), widths[-third:].mean()
    return max(top, bottom) > 1.5 * max(1.0, min(top, bottom))


def match_phrase(region: Region, phrases: Sequence[str]) -> str | None:
    """The most specific phrase whose colour and shape words agree with the region, or None.

    A phrase must name something this detector can see (a colour, a shape or a generic word); each colour
    or shape word it has must be the region's. 'red circle' beats 'circle', which beats 'object'.
    """
    best, best_score = None, 0
    for phrase in phrases:
        words = set(phrase.replace("-", " ").split())
        words |= {w[:-1] for w in words if w.endswith("s")}
        colours, shapes = words & set(NAMED_COLOURS), words & set(SHAPE_NAMES)
        if not (colours or shapes or words & GENERIC_WORDS):
            continue
        if (colours and colours != {region.colour}) or (shapes and shapes != {region.shape}):
            continue
        score = 1 + len(colours) + len(shapes)
        if score > best_score:
            best, best_score = phrase, score
    return best
