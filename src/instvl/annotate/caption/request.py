"""What one VLM call carries: its kind, the sampled frames, the prompt and, for instance captions, the
instances with one box (or None) per sampled frame, plus how they are shown (`VisualPromptConfig`).

The bottom of the caption package: prompting, visual prompts and the captioner flow import from here.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from instvl.config import BaseConfig
from instvl.datasets.records import FrameSpace, Instance
from instvl.geometry import as_box, boxes_at

RequestKind = Literal["global", "instance", "entities"]
BoxOrNone = Sequence[float] | None


class VisualPromptConfig(BaseConfig):
    """How an instance is shown to the VLM."""

    mode: Literal["boxes", "crops"] = "boxes"
    """'boxes': draw the instance's box on each frame; 'crops': send the box region only."""
    draw_others: bool = True
    """In 'boxes' mode, also draw the other instances (their own colours) so relations can be named."""
    line_width: float = 0.008
    """Box line width as a fraction of the longer image side (at least 2 px)."""
    labels: bool = True
    """Write "ID: k" above each box."""
    crop_margin: float = 0.15
    """In 'crops' mode, grow the box by this fraction of its size on each side."""
    max_images: int = 8
    """At most this many frames per request (evenly subsampled)."""
    max_side: int = 768
    """Downscale images so that their longer side is at most this many pixels."""


@dataclass(slots=True)
class InstanceInfo:
    """An instance as the captioner sees it: id, detector phrase and one box (or None) per sampled frame."""

    instance_id: int
    phrase: str
    boxes: list[BoxOrNone]

    @classmethod
    def from_instance(cls, instance: Instance, num_frames: int) -> "InstanceInfo":
        """The boxes of an instance whose trajectory counts sampled indices, at each of the `num_frames`
        sampled frames (None where it is absent)."""
        trajectory = instance.trajectory
        trajectory.require_space(FrameSpace.SAMPLED, "a caption request")
        boxes, present = boxes_at(trajectory.frame_index, trajectory.box, range(num_frames))
        return cls(instance.instance_id, instance.phrase,
                   [as_box(box) if shown else None for box, shown in zip(boxes, present, strict=True)])

    def visible_boxes(self) -> np.ndarray:
        """The boxes of the frames where the instance is visible, as an (N, 4) float array."""
        return np.asarray([b for b in self.boxes if b is not None], dtype=np.float64).reshape(-1, 4)


@dataclass(slots=True)
class CaptionRequest:
    """One VLM call: a global caption, an instance caption, or a global caption plus salient entities."""

    kind: RequestKind
    frames: list[np.ndarray]
    prompt: str
    instance: InstanceInfo | None = None
    others: list[InstanceInfo] = field(default_factory=list)
    visual: VisualPromptConfig = field(default_factory=VisualPromptConfig)

    def __post_init__(self) -> None:
        if self.kind not in ("global", "instance", "entities"):
            raise ValueError(f"unknown caption request kind {self.kind!r} (global, instance, entities)")
        if not self.frames:
            raise ValueError(f"a {self.kind!r} caption request needs at least one frame")
        if (self.kind == "instance") != (self.instance is not None):
            raise ValueError("an 'instance' request needs `instance`; other kinds must not have one")
        for info in [self.instance, *self.others]:
            if info is not None and len(info.boxes) != len(self.frames):
                raise ValueError(f"instance {info.instance_id} has {len(info.boxes)} boxes for "
                                 f"{len(self.frames)} frames; boxes must be aligned to the frames")

    def target(self) -> InstanceInfo:
        """The instance an 'instance' request describes; a ValueError for the other kinds, which have none."""
        if self.instance is None:
            raise ValueError(f"a {self.kind!r} caption request describes no instance")
        return self.instance
