"""VLM captioning: global captions, instance captions from box prompts, and salient entities.

`CaptionerConfig` picks a backend by `kind` (vllm | openai | hf | pixels | fake); `cfg.build()` returns a
`Captioner` whose `caption(requests)` gives one cleaned text per request:

    >>> from pydantic import TypeAdapter
    >>> cfg = TypeAdapter(CaptionerConfig).validate_python({"kind": "fake"})
    >>> captioner = cfg.build()
    >>> captioner.model_id
    'instvl/fake-captioner'
"""

from typing import Annotated

from pydantic import Field

from instvl.annotate.caption.base import (
    BatchCaptioner,
    Captioner,
    CaptionerBaseConfig,
    CaptionError,
    make_request,
    request_key,
)
from instvl.annotate.caption.cleaning import CleaningConfig, caption_defects, clean_caption, parse_entities
from instvl.annotate.caption.fake import FakeCaptioner
from instvl.annotate.caption.hf import HFCaptioner
from instvl.annotate.caption.openai import OpenAICaptioner
from instvl.annotate.caption.pixels import PixelCaptioner
from instvl.annotate.caption.prompting import PromptConfig, load_template, render_prompt
from instvl.annotate.caption.request import CaptionRequest, InstanceInfo, RequestKind, VisualPromptConfig
from instvl.annotate.caption.visual_prompt import draw_boxes, render_request
from instvl.annotate.caption.vllm import VLLMCaptioner

CaptionerConfig = Annotated[
    VLLMCaptioner.Config | OpenAICaptioner.Config | HFCaptioner.Config | PixelCaptioner.Config
    | FakeCaptioner.Config,
    Field(discriminator="kind"),
]

__all__ = [
    "BatchCaptioner", "CaptionError", "CaptionRequest", "Captioner", "CaptionerConfig", "CaptionerBaseConfig",
    "CleaningConfig", "FakeCaptioner", "HFCaptioner", "InstanceInfo", "OpenAICaptioner", "PixelCaptioner",
    "PromptConfig",
    "RequestKind", "VLLMCaptioner", "VisualPromptConfig", "caption_defects", "clean_caption", "draw_boxes",
    "load_template", "make_request", "parse_entities", "render_prompt", "render_request", "request_key",
]
