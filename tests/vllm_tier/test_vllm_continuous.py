"""The `vllm` captioner with `concurrency` on vLLM's real CPU engine: one thread steps the engine and the
requests of concurrent callers join its running batch (no caller waits for another's call to end), each
answered as the offline `LLM.chat` answers it; a caller's bad request fails that caller only; the stream
engine keeps `concurrency` single requests in flight."""

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_vllm_engine import clip_requests, tiny_config

from instvl.annotate.caption import (
    CaptionError,
    PromptConfig,
    VisualPromptConfig,
    VLLMCaptioner,
    make_request,
    render_request,
)
from instvl.annotate.caption.openai import chat_messages
from instvl.testing.media import noise_frames

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def continuous(vllm: ModuleType, tiny_vlm: Path) -> Iterator[VLLMCaptioner]:
    captioner = tiny_config(tiny_vlm, concurrency=16,
                            engine_kwargs={"limit_mm_per_prompt": {"image": 4, "video": 0}}).build()
    yield captioner
    captioner.close()
    del captioner.llm


@pytest.fixture
def steps(continuous: VLLMCaptioner, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Requests the engine held at each step of the test (the feed thread's `step` calls)."""
    engine = continuous.llm.llm_engine
    step, held = engine.step, []

    def recording() -> list[Any]:
        held.append(engine.get_num_unfinished_requests())
        return step()

    monkeypatch.setattr(engine, "step", recording)
    return held


def offline_answers(captioner: VLLMCaptioner, requests: list[Any]) -> list[str]:
    """What one `LLM.chat` call answers (the engine thread is idle: nothing else uses the engine)."""
    conversations = [chat_messages(r, render_request(r), None, "pil") for r in requests]
    outputs = captioner.llm.chat(conversations, sampling_params=captioner.sampling_params, use_tqdm=False)
    return [captioner.finish(r, o.outputs[0].text) for r, o in zip(requests, outputs, strict=True)]


def test_concurrent_callers_share_the_running_batch_and_get_the_offline_answers(continuous, steps):
    clips = [clip_requests(continuous, 70 + clip, 64 + 16 * clip, 64) for clip in range(4)]
    started = threading.Barrier(len(clips))

    def caller(requests: list[Any]) -> list[str]:
        started.wait()
        return [continuous.caption([r])[0] for r in requests[:2]] + continuous.caption(requests[2:])

    with ThreadPoolExecutor(len(clips)) as pool:
        answers = list(pool.map(caller, clips))
    # One caller holds at most 2 requests at once: more were several callers' requests together, and
    # requests were added while others ran (in calls, a call's requests enter together and only leave).
    assert max(steps) > 2, steps
    assert any(after > before > 0 for before, after in itertools.pairwise(steps)), steps
    expected = [offline_answers(continuous, requests) for requests in clips]
    assert answers == expected and any(a for clip in answers for a in clip)


def test_a_bad_request_fails_its_caller_only(continuous):
    good = clip_requests(continuous, 80, 96, 64)
    eight = PromptConfig(visual=VisualPromptConfig(max_images=8, max_side=96))
    bad = make_request("global", noise_frames(8, 64, 64, seed=81), eight)  # the engine allows 4 images
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(continuous.caption, [bad])
        answered = pool.submit(continuous.caption, good)
        with pytest.raises(Exception, match="image"):
            failing.result(timeout=600)
        assert answered.result(timeout=600) == offline_answers(continuous, good)


def test_a_closed_captioner_refuses_new_requests(continuous):  # last: it closes the module's engine
    (request,) = clip_requests(continuous, 90, 64, 64)[:1]
    assert isinstance(continuous.caption([request])[0], str)
    continuous.close()
    with pytest.raises(CaptionError, match="closed"):
        continuous.caption([request])
