"""The configuration of InstVL-Synth: how many samples, how they look, and where they are written."""

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instvl.config import BaseConfig
from instvl.datasets.synth.scene import ATTRIBUTES, changeable, choices

Attribute = Literal["shape", "colour", "texture", "size"]
"""An object attribute, as in `scene.ATTRIBUTES`."""
Span = int | tuple[int, int]
"""A fixed value or an inclusive (low, high) range sampled per sample."""


LATER_SETTINGS = ("same_colour_confusers", "entering_fraction", "speed_scale", "confuser_attributes",
                  "family_motion", "caption_background")


def span(value: Span) -> tuple[int, int]:
    """(low, high) of a fixed value or a range."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class SynthConfig(BaseConfig):
    """InstVL-Synth: procedural videos and images of moving objects with ground-truth tracks and captions."""

    output: str
    """Dataset root (format 'shards') or media folder (format 'raw') to write."""
    num_samples: int = Field(8, ge=1)
    """Number of samples; sample k only depends on (seed, k), so a larger run extends a smaller one."""
    seed: int = Field(0, ge=0)
    """Seed of the whole benchmark; the same seed gives byte-identical media and identical rows."""
    width: Span = 64
    """Frame width in pixels, or a [low, high] range; rounded down to an even number."""
    height: Span = 64
    """Frame height in pixels, or a [low, high] range; rounded down to an even number."""
    num_frames: Span = 8
    """Frames per video clip, or a [low, high] range (images have one)."""
    fps: float = Field(8.0, gt=0)
    """Frame rate of the video clips."""
    image_fraction: float = Field(0.25, ge=0, le=1)
    """Share of samples that are still images instead of video clips."""
    min_objects: int = Field(1, ge=1)
    """Fewest objects per scene (a crowded small frame may hold fewer: objects are never forced in)."""
    max_objects: int = Field(4, ge=1, le=10)
    """Most objects per scene."""
    confuser_fraction: float = Field(0.5, ge=0, le=1)
    """Chance that an object copies another object of its scene except for one attribute."""
    occlusion: bool = False
    """Let objects pass behind one another and leave the frame (hidden frames drop out of the track)."""
    same_colour_confusers: bool = False
    """Confusers keep their source's colour and change its shape, texture or size instead (harder to track:
    a colour template matches both)."""
    confuser_attributes: tuple[Attribute, ...] = ("shape", "colour", "texture", "size")
    """The attributes a confuser may change (one of them, drawn per confuser); the others it keeps. Without
    "colour" a scene's family shares one colour and differs in the attributes that are harder to see."""
    family_motion: bool = False
    """A confuser also moves like the object it copies (same motion, direction, speed and displacement):
    a family moves together, so motion tells scenes apart but not the objects of one scene."""
    caption_background: bool = False
    """Instance captions also name the scene's background, as the global caption does ('a small red star
    over a photo of a cat near the top ...'): what sets a scene's objects apart from other clips' objects
    is then in every caption, and what is left to confuse is the scene's own objects."""
    entering_fraction: float = Field(0.0, ge=0, le=1)
    """Chance that a moving object enters the frame from outside or leaves it (needs `occlusion`)."""
    speed_scale: float = Field(1.0, gt=0, le=4)
    """Multiplies every object's displacement over the clip (faster objects cross more often)."""
    masks: bool = False
    """Store a COCO RLE mask per visible frame of each instance (needs pycocotools)."""
    backgrounds: Literal["skimage", "plain"] = "skimage"
    """Photos shipped with scikit-image, cropped and resized; or plain grey gradients."""
    val_fraction: float = Field(0.1, ge=0, le=1)
    """Share of samples in the 'val' split."""
    test_fraction: float = Field(0.1, ge=0, le=1)
    """Share of samples in the 'test' split."""
    format: Literal["shards", "raw"] = "shards"
    """'shards': InstVL Parquet shards; 'raw': MP4/JPEG files plus ground_truth.jsonl."""
    samples_per_shard: int = Field(256, ge=1)
    """Samples per work unit (unit k holds samples [k*n, (k+1)*n)); a rerun skips finished units."""
    jpeg_quality: int = Field(92, ge=1, le=100)
    """JPEG quality of the images."""
    video_crf: int = Field(18, ge=0, le=51)
    """x264 constant rate factor of the clips (lower is better quality)."""

    @field_validator("confuser_attributes")
    @classmethod
    def _canonical_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # One order, so that the same set draws the same scenes and has the same hash.
        if len(set(value)) != len(value):
            raise ValueError(f"confuser_attributes: repeated attribute in {list(value)}")
        return tuple(a for a in ATTRIBUTES if a in value)

    @model_validator(mode="after")
    def _check(self) -> "SynthConfig":
        for name in ("width", "height", "num_frames"):
            low, high = span(getattr(self, name))
            minimum = 2 if name == "num_frames" else 32
            if not minimum <= low <= high:
                raise ValueError(f"{name}: need {minimum} <= low <= high, got {getattr(self, name)}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) > max_objects ({self.max_objects})")
        if self.entering_fraction and not self.occlusion:
            raise ValueError("entering_fraction needs occlusion: true (objects outside the frame are hidden)")
        changing = changeable(self.confuser_attributes, self.same_colour_confusers)
        if not changing:
            raise ValueError("confusers have no attribute left to change (confuser_attributes, "
                             "same_colour_confusers)")
        # With confuser_fraction 1 a scene's objects all vary the first one's changeable attributes only.
        variants = math.prod(len(choices(a)) for a in changing)
        if self.confuser_fraction == 1 and variants < self.max_objects:
            raise ValueError(f"confuser_attributes {list(changing)} give {variants} distinct objects, "
                             f"fewer than max_objects ({self.max_objects})")
        if self.val_fraction + self.test_fraction > 1:
            raise ValueError("val_fraction + test_fraction must not exceed 1")
        return self

    def dataset_config(self) -> dict[str, Any]:
        """The resolved config without `output`: where a dataset lives is not part of what it is. The
        difficulty settings added later appear only when set, so older datasets keep their hash."""
        fields = type(self).model_fields
        unset = {name for name in LATER_SETTINGS if getattr(self, name) == fields[name].default}
        return self.model_dump(mode="json", exclude={"output", *unset})

    def dataset_hash(self) -> str:
        """Hash of `dataset_config()`, the same one the shard writer records for it."""
        text = json.dumps(self.dataset_config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
