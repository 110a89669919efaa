"""A deterministic captioner that describes requests from their pixels and boxes, with no model.

Instance captions read the trajectory ("a small red ball moving right in the upper half of the frame,
left of the dog"); global captions name the dominant colours and the known instances. Pipelines, tests
and the demo therefore produce sensible text offline.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

from instvl.annotate.caption.base import BatchCaptioner, CaptionerBaseConfig
from instvl.annotate.caption.request import CaptionRequest, InstanceInfo

# Reference colours for naming a region's mean colour.
_COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 30, 30),
    "green": (40, 170, 60), "blue": (30, 80, 220), "yellow": (240, 220, 40), "orange": (245, 140, 30),
    "purple": (130, 40, 170), "pink": (245, 160, 200), "brown": (120, 75, 40), "cyan": (40, 210, 220),
}
_MOTION_THRESHOLD = 0.05  # normalised centre displacement below which an instance counts as still


def colour_name(rgb: Sequence[float]) -> str:
    """The nearest reference colour name of an RGB triple."""
    values = np.asarray(rgb, dtype=np.float64)
    return min(_COLOUR_NAMES, key=lambda name: float(np.sum((values - _COLOUR_NAMES[name]) ** 2)))


def region_colour(frame: np.ndarray, box: Sequence[float] | None = None) -> str:
    """Name of the mean colour of a frame, or of a normalised xyxy box inside it."""
    height, width = frame.shape[:2]
    if box is not None:
        x0, y0 = int(box[0] * width), int(box[1] * height)
        x1, y1 = max(x0 + 1, int(np.ceil(box[2] * width))), max(y0 + 1, int(np.ceil(box[3] * height)))
        frame = frame[y0:y1, x0:x1]
    return colour_name(frame.reshape(-1, 3).mean(axis=0))


def describe_motion(boxes: np.ndarray) -> str:
    """'moving right and down', 'staying still', from the first and last box centres."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dx, dy = centres[-1] - centres[0] if len(centres) > 1 else (0.0, 0.0)
    parts = []
    if abs(dx) >= _MOTION_THRESHOLD:
        parts.append("right" if dx > 0 else "left")
    if abs(dy) >= _MOTION_THRESHOLD:
        parts.append("down" if dy > 0 else "up")
    return "moving " + " and ".join(parts) if parts else "staying still"


def describe_place(boxes: np.ndarray) -> str:
    """'in the upper left of the frame' from the mean box centre."""
    cx, cy = ((boxes[:, :2] + boxes[:, 2:]) / 2).mean(axis=0)
    vertical = "upper" if cy < 0.4 else "lower" if cy > 0.6 else ""
    horizontal = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    if vertical and horizontal:
        return f"in the {vertical} {horizontal} of the frame"
    if vertical:
        return f"in the {vertical} half of the frame"
    return f"on the {horizontal} side of the frame" if horizontal else "in the centre of the frame"


def describe_size(boxes: np.ndarray) -> str:
    area = float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    return "small" if area < 0.05 else "large" if area > 0.25 else "medium-sized"


def describe_relation(target: InstanceInfo, others: Sequence[InstanceInfo]) -> str:
    """Where the nearest other instance is, relative to the target ('left of the dog')."""
    centre = _mean_centre(target)
    nearest, best = None, np.inf
    for other in others:
        if other.visible_boxes().size:
            distance = float(np.linalg.norm(_mean_centre(other) - centre))
            nearest, best = (other, distance) if distance < best else (nearest, best)
    if nearest is None:
        return ""
    dx, dy = _mean_centre(nearest) - centre
    side = ("left of" if dx > 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy > 0 else "below")
    return f", {side} the {nearest.phrase}"


def _mean_centre(info: InstanceInfo) -> np.ndarray:
    boxes = info.visible_boxes()
    return ((boxes[:, :2] + boxes[:, 2:]) / 2).mean(axis=0)


class FakeCaptioner(BatchCaptioner):
    """Deterministic captions from the request's frames and boxes; the prompt text is not read."""

    generation_fields = ("entities",)

    class Config(CaptionerBaseConfig):
        kind: Literal["fake"] = "fake"
        entities: list[str] = ["object"]
        """Phrases returned as salient entities by 'entities' requests."""

        def build(self) -> "FakeCaptioner":
            return FakeCaptioner(self)

    def __init__(self, cfg: "FakeCaptioner.Config") -> None:
        super().__init__(cfg, model_id="instvl/fake-captioner")
        self.entities = list(cfg.entities)

    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        return [self.describe(request) for request in requests]

    def describe(self, request: CaptionRequest) -> str:
        if request.kind == "instance":
            return self.describe_instance(request)
        text = self.describe_scene(request)
        if request.kind == "entities":
            return f"Caption: {text}\nEntities: {'; '.join(self.entities)}"
        return text

    def describe_instance(self, request: CaptionRequest) -> str:
        target = request.target()
        boxes = target.visible_boxes()
        first = next(t for t, box in enumerate(target.boxes) if box is not None)
        colour = region_colour(request.frames[first], target.boxes[first])
        return (f"A {describe_size(boxes)} {colour} {target.phrase} {describe_motion(boxes)} "
                f"{describe_place(boxes)}{describe_relation(target, request.others)}.")

    def describe_scene(self, request: CaptionRequest) -> str:
        media = "An image" if len(request.frames) == 1 else f"A {len(request.frames)}-frame video"
        text = f"{media} with a mostly {region_colour(request.frames[0])} background"
        phrases = sorted({o.phrase for o in request.others})
        return text + (f" showing {', '.join(phrases)}." if phrases else ".")
