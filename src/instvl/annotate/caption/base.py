"""The captioner interface: building requests, the batch-first protocol and the shared VLM flow.

A request (`request.CaptionRequest`) carries sampled RGB frames, the rendered prompt and, for instance
captions, the instance's per-frame boxes (plus the other instances', for relations). Every VLM backend
runs the same flow: visual prompt (boxes drawn or crops) -> generate -> clean.
"""

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from instvl.annotate.caption.cleaning import CleaningConfig, clean_caption, strip_artefacts
from instvl.annotate.caption.prompting import PromptConfig, render_prompt
from instvl.annotate.caption.request import CaptionRequest, InstanceInfo, RequestKind
from instvl.annotate.caption.visual_prompt import render_request
from instvl.config import BaseConfig


class CaptionError(RuntimeError):
    """A captioning backend failed for a request (after its retries, where it has any)."""


def make_request(kind: RequestKind, frames: Sequence[np.ndarray], prompts: PromptConfig | None = None,
                 instance: InstanceInfo | None = None, others: Sequence[InstanceInfo] = ()) -> CaptionRequest:
    """A request whose prompt is rendered from the configured template of its kind."""
    prompts = prompts or PromptConfig()
    others = [o for o in others if instance is None or o.instance_id != instance.instance_id]
    frames = list(frames)
    prompt = render_prompt(kind, prompts, frames, instance, others)
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
    """What the pipeline calls on a captioner: build requests with its prompt settings, key them for the
    caption cache, and turn a batch of requests into one text per request, in order."""

    model_id: str

    def request(self, kind: RequestKind, frames: Sequence[np.ndarray], instance: InstanceInfo | None = None,
                others: Sequence[InstanceInfo] = ()) -> CaptionRequest: ...

    def key(self, request: CaptionRequest) -> str: ...

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]: ...


class WrappedCaptioner:
    """The base of captioners that wrap another (a cache, a batcher, a cost model): requests, keys and the
    model id are the inner captioner's; subclasses define `caption`."""

    def __init__(self, inner: Captioner) -> None:
        self.inner = inner
        self.model_id = inner.model_id

    def request(self, kind: RequestKind, frames: Sequence[np.ndarray], instance: InstanceInfo | None = None,
                others: Sequence[InstanceInfo] = ()) -> CaptionRequest:
        return self.inner.request(kind, frames, instance, others)

    def key(self, request: CaptionRequest) -> str:
        return self.inner.key(request)


class CaptionerBaseConfig(BaseConfig):
    """Settings every captioner backend shares."""

    prompts: PromptConfig = PromptConfig()
    cleaning: CleaningConfig = CleaningConfig()
    batch_size: int = 8
    """Requests handed to the model at once."""


class BatchCaptioner(ABC):
    """The shared flow: batches of requests -> visual prompts -> `generate` -> cleaned text."""

    generation_fields: tuple[str, ...] = ()
    """Config fields that change the model's answers; they enter the cache key."""

    def __init__(self, cfg: CaptionerBaseConfig, model_id: str) -> None:
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
