"""A CPU captioner without weights: it describes what colour segmentation finds in the pixels.

'entities' and 'global' requests segment the frames with `detect.pixels` and list the coloured shapes
found ("a red circle and a blue square over a mostly grey background"); 'instance' requests name the
colour of the instance's own pixels (the named colour most of the pixels inside its boxes have), its size,
where it is, how its boxes move ("moving right and back") and the nearest other instance. Real
computation, no ground truth and no language model: the offline demo's captioner for InstVL-Synth.

    >>> from pydantic import TypeAdapter
    >>> from instvl.annotate.caption import CaptionerConfig
    >>> TypeAdapter(CaptionerConfig).validate_python({"kind": "pixels"}).build().model_id
    'instvl/pixel-describer'
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

from instvl.annotate.caption.base import BatchCaptioner, CaptionerBaseConfig
from instvl.annotate.caption.fake import describe_place, describe_relation, describe_size, region_colour
from instvl.annotate.caption.request import CaptionRequest, InstanceInfo
from instvl.annotate.detect.pixels import NAMED_COLOURS, PixelDetector, nearest_colour

_MOTION_THRESHOLD = 0.05
"""Normalised centre displacement below which an instance counts as still."""


def describe_path(boxes: np.ndarray) -> str:
    """'moving right and down', 'moving left and back', 'staying still', from the box centres."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    if len(centres) < 2:
        return "staying still"
    offsets = centres - centres[0]
    far = offsets[int(np.argmax(np.linalg.norm(offsets, axis=1)))]
    if float(np.linalg.norm(far)) < _MOTION_THRESHOLD:
        return "staying still"
    # Name each axis that moves at least half as much as the main one ('right', 'right and down').
    main = float(np.abs(far).max())
    parts = []
    if abs(far[0]) >= 0.5 * main:
        parts.append("right" if far[0] > 0 else "left")
    if abs(far[1]) >= 0.5 * main:
        parts.append("down" if far[1] > 0 else "up")
    returned = float(np.linalg.norm(offsets[-1])) < 0.5 * float(np.linalg.norm(far))
    return "moving " + " and ".join(parts) + (" and back" if returned else "")


def instance_colour(frames: Sequence[np.ndarray], info: InstanceInfo, tolerance: float = 50.0) -> str:
    """The named colour most of the instance's pixels have (inside its boxes, over its visible frames);
    the nearest name of their mean colour when none of them is close to a named colour."""
    votes = np.zeros(len(NAMED_COLOURS), np.int64)
    first = None
    for frame, box in zip(frames, info.boxes, strict=False):
        if box is None:
            continue
        height, width = frame.shape[:2]
        x0, y0 = int(box[0] * width), int(box[1] * height)
        x1, y1 = max(x0 + 1, int(np.ceil(box[2] * width))), max(y0 + 1, int(np.ceil(box[3] * height)))
        crop = frame[y0:y1, x0:x1]
        first = (frame, box) if first is None else first
        labels, _ = nearest_colour(crop.reshape(-1, 3).astype(np.float32), tolerance)
        votes += np.bincount(labels[labels >= 0], minlength=len(NAMED_COLOURS))
    if votes.sum():
        return list(NAMED_COLOURS)[int(votes.argmax())]
    return region_colour(*first) if first is not None else "unknown"


class PixelCaptioner(BatchCaptioner):
    """Captions computed from the request's pixels and boxes; the prompt text is not read."""

    class Config(CaptionerBaseConfig):
        kind: Literal["pixels"] = "pixels"
        max_entities: int = 8

        def build(self) -> "PixelCaptioner":
            return PixelCaptioner(self)

    def __init__(self, cfg: "PixelCaptioner.Config") -> None:
        super().__init__(cfg, model_id="instvl/pixel-describer")
        self.max_entities = cfg.max_entities
        self.segmenter = PixelDetector()

    generation_fields = ("max_entities",)

    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        return [self.describe(request) for request in requests]

    def describe(self, request: CaptionRequest) -> str:
        if request.kind == "instance":
            return self.describe_instance(request)
        entities = self.entities(request.frames)
        text = self.describe_scene(request, entities)
        if request.kind == "entities":
            return f"Caption: {text}\nEntities: {'; '.join(entities)}"
        return text

    def entities(self, frames: Sequence[np.ndarray]) -> list[str]:
        """Names of the coloured shapes segmented on the first, middle and last frames, most seen first."""
        picks = sorted({0, len(frames) // 2, len(frames) - 1})
        counts: dict[str, int] = {}
        for index in picks:
            for region in self.segmenter.regions(frames[index]):
                counts[region.name] = counts.get(region.name, 0) + 1
        ranked = sorted(counts, key=lambda name: -counts[name])
        return ranked[: self.max_entities]

    def describe_scene(self, request: CaptionRequest, entities: Sequence[str]) -> str:
        media = "An image" if len(request.frames) == 1 else "A video"
        background = f"over a mostly {region_colour(request.frames[0])} background"
        if not entities:
            return f"{media} {background}, with no distinct coloured object."
        named = [f"{'an' if name[0] in 'aeiou' else 'a'} {name}" for name in entities]
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" and {named[-1]}"
        return f"{media} of {listed} {background}."

    def describe_instance(self, request: CaptionRequest) -> str:
        target = request.target()
        boxes = target.visible_boxes()
        colour = instance_colour(request.frames, target)
        # The phrase names the kind ('circle', 'red circle'); the colour word is the one the pixels show.
        kind = " ".join(w for w in target.phrase.split() if w not in NAMED_COLOURS) or "object"
        size = describe_size(boxes)
        return (f"{'An' if size[0] in 'aeiou' else 'A'} {size} {colour} {kind} {describe_path(boxes)} "
                f"{describe_place(boxes)}{describe_relation(target, request.others)}.")
