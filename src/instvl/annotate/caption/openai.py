"""Caption through any OpenAI-compatible chat-completions endpoint (`vllm serve`, TGI, hosted APIs).

Plain HTTP with the standard library: images travel as base64 data URLs (a video request's frames as one
`data:video/jpeg` URL, as `vllm serve` reads it), a batch is sent with a thread pool, and
429/5xx/connection errors/timeouts are retried with exponential backoff. The API key is read from the
environment variable named in the config and is never logged. A `vllm serve` endpoint must allow
`prompts.visual.max_images` images per prompt, and one video when `prompts.visual.video` is on:
`--limit-mm-per-prompt '{"image": 8, "video": 1}'` (the README's command line).
"""

import http.client
import json
import logging
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from PIL import Image

from instvl.annotate.caption.base import BatchCaptioner, CaptionerBaseConfig, CaptionError
from instvl.annotate.caption.request import CaptionRequest
from instvl.annotate.caption.visual_prompt import to_data_url

log = logging.getLogger(__name__)
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_TRANSIENT = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)
# vLLM: "At most 2 image(s) may be provided in one prompt."; other servers word their limits alike.
_IMAGE_LIMIT = re.compile(r"image.*(at most|limit|too many|exceed)|(at most|limit|too many|exceed).*image",
                          re.IGNORECASE)


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


ImageFormat = Literal["pil", "jpeg", "png"]


def chat_messages(request: CaptionRequest, images: list[Image.Image], system_prompt: str | None = None,
                  image_format: ImageFormat = "jpeg", quality: int = 90) -> list[dict[str, Any]]:
    """OpenAI chat messages for one request: its images (or its video), then the prompt text.

    Images are data URLs, or with `image_format="pil"` the PIL images themselves (`image_pil` parts, which
    vLLM's offline `LLM.chat` takes without encoding). A video request's frames are one `video_url` part,
    `data:video/jpeg;base64,<frame>,<frame>,...` (vLLM's frame-list video URL: no video encoding)."""
    if request.as_video:
        if image_format == "pil":
            raise ValueError("a video request cannot be sent as PIL images; pass its frames as video data")
        content: list[dict[str, Any]] = [{"type": "video_url", "video_url": {"url": video_data_url(images,
                                                                                                    quality)}}]
    elif image_format == "pil":
        content = [{"type": "image_pil", "image_pil": image} for image in images]
    else:
        content = [{"type": "image_url", "image_url": {"url": to_data_url(image, image_format, quality)}}
                   for image in images]
    content.append({"type": "text", "text": request.prompt})
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": content}]


def video_data_url(frames: Sequence[Image.Image], quality: int = 90) -> str:
    """`data:video/jpeg;base64,` and the JPEG frames in base64, comma-separated (vLLM's video frame list)."""
    parts = [to_data_url(frame, "jpeg", quality).split(",", 1)[1] for frame in frames]
    return "data:video/jpeg;base64," + ",".join(parts)


class OpenAICaptioner(BatchCaptioner):
    """Chat-completions client; one HTTP call per request, `concurrency` calls in flight."""

    generation_fields = ("max_tokens", "temperature", "top_p", "seed", "system_prompt", "image_format",
                         "image_quality")

    class Config(CaptionerBaseConfig):
        kind: Literal["openai"] = "openai"
        base_url: str = "http://127.0.0.1:8000/v1"
        """The API root; requests go to `<base_url>/chat/completions`."""
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
        api_key_env: str | None = "OPENAI_API_KEY"
        """NAME of the environment variable holding the API key (no key is sent when it is unset)."""
        max_tokens: int = 256
        temperature: float = 0.0
        top_p: float = 1.0
        seed: int | None = None
        system_prompt: str | None = None
        timeout_s: float = 120.0
        """Per HTTP call."""
        max_retries: int = 4
        """Retries after the first attempt, on 429/5xx, connection errors and timeouts."""
        backoff_s: float = 1.0
        """First retry delay; doubled per retry (with jitter), capped at `max_backoff_s`."""
        max_backoff_s: float = 30.0
        concurrency: int = 4
        batch_size: int = 32
        image_format: Literal["jpeg", "png"] = "jpeg"
        image_quality: int = 90
        on_error: Literal["raise", "empty"] = "raise"
        """'empty': a request that still fails after retries yields "" (flagged by the QC checks)."""

        def build(self) -> "OpenAICaptioner":
            return OpenAICaptioner(self)

    def __init__(self, cfg: "OpenAICaptioner.Config") -> None:
        super().__init__(cfg, model_id=cfg.model)
        self.cfg: OpenAICaptioner.Config = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"

    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        bodies = [self.request_body(r, imgs) for r, imgs in zip(requests, images, strict=True)]
        workers = max(1, min(self.cfg.concurrency, len(bodies)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="instvl-caption") as pool:
            return list(pool.map(self._complete_or_empty, bodies))

    def request_body(self, request: CaptionRequest, images: list[Image.Image]) -> dict[str, Any]:
        cfg = self.cfg
        messages = chat_messages(request, images, cfg.system_prompt, cfg.image_format, cfg.image_quality)
        body: dict[str, Any] = {"model": cfg.model, "max_tokens": cfg.max_tokens,
                                "temperature": cfg.temperature, "top_p": cfg.top_p, "messages": messages}
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        return body

    def _complete_or_empty(self, body: dict[str, Any]) -> str:
        try:
            return self.complete(body)
        except CaptionError as err:
            if self.cfg.on_error == "raise":
                raise
            log.warning("caption request failed, leaving it empty: %s", err)
            return ""

    def complete(self, body: dict[str, Any]) -> str:
        """The answer text of one chat-completions call, retrying transient failures."""
        attempts = self.cfg.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._post_once(body)
            except _RetryableError as err:
                if attempt == attempts:
                    raise CaptionError(f"{self.url}: giving up after {attempts} attempts: {err}") from err
                delay = self._backoff(attempt, err.retry_after)
                log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", self.url, err, attempt, attempts,
                            delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cfg.max_backoff_s)
        delay = self.cfg.backoff_s * 2 ** (attempt - 1)
        return min(delay * (1 + 0.25 * random.random()), self.cfg.max_backoff_s)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_once(self, body: dict[str, Any]) -> str:
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            if err.code in _RETRY_STATUS:
                raise _RetryableError(f"HTTP {err.code}", _retry_after(err.headers)) from None
            detail = _error_detail(err.read())
            if err.code == 400 and _IMAGE_LIMIT.search(detail):
                detail += (f" (this request has {_image_count(body)} images: set prompts.visual.max_images "
                           "to at most the server's per-prompt image limit, vLLM's --limit-mm-per-prompt)")
            raise CaptionError(f"{self.url}: HTTP {err.code}: {detail}") from None
        except _TRANSIENT as err:
            reason = getattr(err, "reason", err)
            raise _RetryableError(f"timed out after {self.cfg.timeout_s}s" if _is_timeout(reason)
                                  else f"connection error: {reason}") from None
        return self._answer_text(payload)

    def _answer_text(self, payload: bytes) -> str:
        try:
            message = json.loads(payload)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise CaptionError(f"{self.url}: malformed chat-completions response ({err!r}): "
                               f"{payload[:200]!r}") from None
        content = message.get("content") or ""
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)


def _error_detail(payload: bytes) -> str:
    """The message of an error response: OpenAI's {"error": {"message"}}, vLLM's older {"message"}, or
    the start of the raw body."""
    try:
        error = json.loads(payload)
        error = error.get("error", error) if isinstance(error, dict) else error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:500]
    except ValueError:
        pass
    return payload[:300].decode("utf-8", "replace")


def _image_count(body: dict[str, Any]) -> int:  # a video counts as none
    return sum(isinstance(part, dict) and part.get("type") == "image_url"
               for message in body.get("messages", []) if isinstance(message.get("content"), list)
               for part in message["content"])


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _is_timeout(reason: object) -> bool:
    return isinstance(reason, TimeoutError) or "timed out" in str(reason)
