"""What one VLM call carries: its kind, the sampled frames, the prompt and, for instance captions, the
instances with one box (or None) per sampled frame, plus how they are shown (`VisualPromptConfig`).

The bottom of the caption package: prompting, visual prompts and the captioner flow import from here.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import model_validator

from instvl.config import BaseConfig
from instvl.datasets.records import FrameSpace, Instance
from instvl.geometry import as_box, boxes_at

RequestKind = Literal["global", "instance", "entities"]
BoxOrNone = Sequence[float] | None


class VisualPromptConfig(BaseConfig):
    """How the frames reach the VLM and how an instance is shown in them.

    Instance modes, and when to use which:

    - 'boxes' (default; the best grounding): the frames where the instance is visible, its box and the
      others' drawn on them (Set-of-Mark). Every instance request has images of its own, so requests share
      no prefix and a clip with N instances encodes its frames N + 1 times.
    - 'crops': the box region of those frames only; appearance detail without context or relations.
    - 'prefix': the clip's clean frames first, the very images its global and entities requests get, then
      `marked_frames` frames with the boxes drawn, and the per-frame box coordinates in the text (in the
      model's grounding convention, `coordinates`). All requests of a clip start with identical images, so
      a prefix cache (vLLM's, on by default) reuses their vision encoding and KV: use it when throughput
      matters (many instances per clip) and the model reads box coordinates (Qwen2.5-VL). The instance is
      only drawn on the marked frames, so the VLM must follow it through the others by coordinates.
    """

    mode: Literal["boxes", "crops", "prefix"] = "boxes"
    """'boxes': draw the instance's box on each frame; 'crops': send the box region only; 'prefix': shared
    clean frames, then marked frames and box coordinates (see the class docstring)."""
    draw_others: bool = True
    """Also show the other instances (drawn in their colours; in 'prefix' mode, with their coordinates too),
    so relations can be named."""
    line_width: float = 0.008
    """Box line width as a fraction of the longer image side (at least 2 px)."""
    labels: bool = True
    """Write "ID: k" above each box."""
    crop_margin: float = 0.15
    """In 'crops' mode, grow the box by this fraction of its size on each side."""
    max_images: int = 8
    """At most this many images per request (evenly subsampled frames); in 'prefix' mode the shared clean
    frames are `max_images - marked_frames`, for every request of a clip. A `vllm serve` endpoint needs
    `--limit-mm-per-prompt` of at least this many images."""
    max_side: int = 768
    """Downscale images so that their longer side is at most this many pixels."""
    marked_frames: int = 1
    """In 'prefix' mode, frames with the boxes drawn that follow the shared clean frames (0: coordinates
    only). One marked frame is the one where the instance's box is largest."""
    coordinates: Literal["pixels", "per-mille", "unit"] = "pixels"
    """In 'prefix' mode, how box coordinates are written: 'pixels', absolute [x0, y0, x1, y1] on the image
    the model sees (Qwen2.5-VL's grounding); 'per-mille', 0-1000 (Qwen2-VL); 'unit', 0-1 fractions."""
    pixel_multiple: int = 28
    """In 'prefix' mode, image sides are rounded to a multiple of this, so the model's processor does not
    resize them again and pixel coordinates hold exactly (28 = Qwen2.5-VL's patch 14 x merge 2; 1: off).
    Keep `max_side` low enough that the images stay under the processor's max_pixels."""
    video: bool = False
    """Send the frames of global and entities requests as one video input instead of separate images
    (Qwen2-VL / Qwen2.5-VL: temporal patch merging halves the vision tokens). Instance requests keep
    images. Backends: vllm (multi_modal_data), openai (a `data:video/jpeg` URL of frames); a `vllm serve`
    endpoint needs a video limit of at least 1 in `--limit-mm-per-prompt`."""
    max_video_frames: int = 16
    """At most this many frames in a video input (evenly subsampled)."""

    @model_validator(mode="after")
    def _check_counts(self) -> "VisualPromptConfig":
        if self.max_images < 1 or self.max_video_frames < 1 or self.pixel_multiple < 1:
            raise ValueError("max_images, max_video_frames and pixel_multiple must be at least 1")
        if self.mode == "prefix" and not 0 <= self.marked_frames < self.max_images:
            raise ValueError(f"marked_frames must be in [0, max_images) in 'prefix' mode, got "
                             f"{self.marked_frames} with max_images={self.max_images}")
        return self

    def shared_frames(self) -> int:
        """How many frames the clean images of a global or entities request show (in every mode), and in
        'prefix' mode the shared frames that open every request of a clip."""
        return self.max_images - self.marked_frames if self.mode == "prefix" else self.max_images

    def mm_limits(self) -> dict[str, int]:
        """Images and videos one prompt may hold: vLLM's `limit_mm_per_prompt`."""
        return {"image": self.max_images, "video": 1 if self.video else 0}


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

    @property
    def as_video(self) -> bool:
        """Whether the frames go to the VLM as one video input (`visual.video`, global and entities only)."""
        return self.visual.video and self.instance is None

    def target(self) -> InstanceInfo:
        """The instance an 'instance' request describes; a ValueError for the other kinds, which have none."""
        if self.instance is None:
            raise ValueError(f"a {self.kind!r} caption request describes no instance")
        return self.instance
