"""The captioner interface: caption requests, the batch-first protocol and the shared VLM flow.

A request carries sampled RGB frames, the rendered prompt and, for instance captions, the instance's
per-frame boxes (plus the other instances', for relations). Every VLM backend runs the same flow:
visual prompt (boxes drawn or crops) -> generate -> clean.
"""

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from instvl.annotate.caption.cleaning import CleaningConfig, clean_caption, strip_artefacts
from instvl.annotate.caption.prompting import PromptConfig, RequestKind, render_prompt
from instvl.annotate.caption.visual_prompt import VisualPromptConfig, render_request
from instvl.config import BaseConfig

BoxOrNone = Sequence[float] | None


class CaptionError(RuntimeError):
    """A captioning backend failed for a request (after its retries, where it has any)."""


@dataclass(slots=True)
class InstanceInfo:
    """An instance as the captioner sees it: id, detector phrase and one box (or None) per frame."""

    instance_id: int
    phrase: str
    boxes: list[BoxOrNone]

    @classmethod
    def from_track(cls, instance_id: int, phrase: str, frame_index: Sequence[int],
                   boxes: Sequence[Sequence[float]], sampled: Sequence[int]) -> "InstanceInfo":
        """Boxes of a trajectory (clip frame indices -> boxes) at the sampled frames, None where absent."""
        by_frame = dict(zip((int(i) for i in frame_index), boxes, strict=True))
        return cls(instance_id, phrase, [by_frame.get(int(i)) for i in sampled])

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


def make_request(kind: RequestKind, frames: Sequence[np.ndarray], prompts: PromptConfig | None = None,
                 instance: InstanceInfo | None = None, others: Sequence[InstanceInfo] = ()) -> CaptionRequest:
    """A request whose prompt is rendered from the configured template of its kind."""
    prompts = prompts or PromptConfig()
    others = [o for o in others if instance is None or o.instance_id != instance.instance_id]
    frames = list(frames)
    num_images = len(frames) if instance is None else sum(b is not None for b in instance.boxes)
    shown = min(num_images, prompts.visual.max_images)
    prompt = render_prompt(kind, prompts, shown, instance, others)
    return CaptionRequest(kind, frames, prompt, instance, list(others), prompts.visual)


def request_key(model_id: str, request: CaptionRequest, settings: dict[str, Any] | None = None) -> str:
    """A sha256 over everything that determines an answer: model, prompt, visual settings, pixels, boxes,
    plus the backend's answer-changing `settings` (sampling, cleaning)."""
    digest = hashlib.sha256()
    meta = {"model": model_id, "settings": settings or {}, "kind": request.kind, "prompt": request.prompt,
            "visual": request.visual.model_dump(mode="json"),
            "boxes": [_boxes_json(i) for i in [request.instance, *request.others] if i is not None]}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for frame in request.frames:
        array = np.ascontiguousarray(frame)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _boxes_json(info: InstanceInfo) -> list:
    boxes = [None if b is None else [round(float(v), 6) for v in b] for b in info.boxes]
    return [info.instance_id, info.phrase, boxes]


@runtime_checkable
class Captioner(Protocol):
    """Anything that turns a batch of requests into one text per request, in order."""

    model_id: str

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]: ...


class CaptionerSettings(BaseConfig):
    """Settings every captioner backend shares."""

    prompts: PromptConfig = PromptConfig()
    cleaning: CleaningConfig = CleaningConfig()
    batch_size: int = 8
    """Requests handed to the model at once."""


class BatchCaptioner(ABC):
    """The shared flow: batches of requests -> visual prompts -> `generate` -> cleaned text."""

    generation_fields: tuple[str, ...] = ()
    """Config fields that change the model's answers; they enter the cache key."""

    def __init__(self, cfg: CaptionerSettings, model_id: str) -> None:
        if cfg.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {cfg.batch_size}")
        self.cfg = cfg
        self.model_id = model_id

    @abstractmethod
    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        """Raw answers for one batch; `images[i]` are the rendered images of `requests[i]`."""

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """One cleaned text per request, in order ('entities' answers keep their two-part layout)."""
        texts: list[str] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = list(requests[start:start + self.cfg.batch_size])
            answers = self.generate(batch, [render_request(r) for r in batch])
            if len(answers) != len(batch):
                raise CaptionError(f"{self.model_id}: {len(answers)} answers for {len(batch)} requests")
            texts += [self.finish(r, a) for r, a in zip(batch, answers, strict=True)]
        return texts

    def finish(self, request: CaptionRequest, answer: str) -> str:
        if request.kind == "entities":  # parse_entities needs the line structure; clean lightly
            return "\n".join(strip_artefacts(line) for line in answer.splitlines() if line.strip())
        return clean_caption(answer, self.cfg.cleaning)

    def request(self, kind: RequestKind, frames: Sequence[np.ndarray], instance: InstanceInfo | None = None,
                others: Sequence[InstanceInfo] = ()) -> CaptionRequest:
        """A request rendered with this captioner's prompt settings."""
        return make_request(kind, frames, self.cfg.prompts, instance, others)

    def answer_settings(self) -> dict[str, Any]:
        """The settings that change answers (not transport ones such as URLs or concurrency)."""
        fields = {"cleaning", *self.generation_fields}
        return self.cfg.model_dump(mode="json", include=fields)

    def key(self, request: CaptionRequest) -> str:
        """The cache key of a request for this captioner's model and answer settings."""
        return request_key(self.model_id, request, self.answer_settings())
