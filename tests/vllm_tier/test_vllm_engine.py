"""The `vllm` captioner on vLLM's real offline engine (CPU), with a tiny random Qwen2-VL: one `LLM.chat`
call per batch, every request answered in order, the images inside the prompts, sampling applied; PIL
images handed over without encoding, 'prefix' requests hitting the prefix cache, video input."""

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from instvl.annotate.caption import (
    CaptionRequest,
    InstanceInfo,
    PromptConfig,
    VisualPromptConfig,
    VLLMCaptioner,
    make_request,
    render_request,
)
from instvl.testing.media import noise_frames

pytestmark = pytest.mark.vllm

SAMPLING = {"max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 7, "repetition_penalty": 1.05}


def tiny_config(tiny_vlm: Path, **changes: Any) -> VLLMCaptioner.Config:
    """The tier's captioner on the tiny model: float32 and eager, as vLLM's CPU path wants; at most 4 images
    of 160 px per prompt; `SAMPLING`."""
    return VLLMCaptioner.Config(**{"model": str(tiny_vlm), "dtype": "float32", "max_model_len": 2048,
                                   "enforce_eager": True, "batch_size": 64,
                                   "prompts": {"visual": {"max_images": 4, "max_side": 160}},
                                   **SAMPLING, **changes})


@pytest.fixture(scope="module")
def captioner(vllm: ModuleType, tiny_vlm: Path) -> Iterator[VLLMCaptioner]:
    """One engine for the module (start-up is the slow part). Blocks of 32 tokens (the CPU default is 128),
    so that a few tiny images fill cacheable prefix blocks; one video per prompt allowed for the video
    requests, which the tests build with their own prompt settings."""
    captioner = tiny_config(tiny_vlm, engine_kwargs={"enable_prefix_caching": True, "block_size": 32,
                                                     "limit_mm_per_prompt": {"image": 4, "video": 1}}).build()
    yield captioner
    del captioner.llm


@pytest.fixture
def chat_calls(captioner: VLLMCaptioner, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `llm.chat` call of the test: its conversations, sampling parameters and RequestOutputs."""
    return record(captioner, "chat", monkeypatch)


@pytest.fixture
def generate_calls(captioner: VLLMCaptioner, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `llm.generate` call of the test (video requests): its prompts, parameters and outputs."""
    return record(captioner, "generate", monkeypatch)


def record(captioner: VLLMCaptioner, method: str, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    call = getattr(captioner.llm, method)

    def recording(messages, sampling_params=None, **kwargs):
        outputs = call(messages, sampling_params=sampling_params, **kwargs)
        calls.append({"messages": messages, "params": sampling_params, "outputs": outputs})
        return outputs

    monkeypatch.setattr(captioner.llm, method, recording)
    return calls


@pytest.fixture(scope="module")
def image_processor(tiny_vlm: Path) -> Any:
    import transformers

    return transformers.AutoImageProcessor.from_pretrained(tiny_vlm)


def clip_requests(captioner: VLLMCaptioner, clip: int, width: int, height: int) -> list[CaptionRequest]:
    """A clip's global, entities and instance requests (instances visible on some frames only)."""
    frames = noise_frames(5, width, height, seed=clip)
    boxes = [(0.1, 0.1, 0.5, 0.6), None, (0.2, 0.1, 0.6, 0.6), (0.2, 0.2, 0.6, 0.7), None]
    cup = InstanceInfo(1, "cup", boxes)
    dog = InstanceInfo(2, "dog", [None, (0.5, 0.4, 0.9, 0.9), (0.5, 0.4, 0.9, 0.9), None, None])
    return [captioner.request("global", frames), captioner.request("entities", frames[:3]),
            captioner.request("instance", frames, cup, [cup, dog]),
            captioner.request("instance", frames, dog, [cup, dog])]


def image_tokens(request: CaptionRequest, processor: Any) -> int:
    """How many image tokens Qwen2-VL spends on the request's rendered images (merge 2x2)."""
    grid = processor(images=render_request(request), return_tensors="np")["image_grid_thw"]
    return int(np.prod(grid, axis=-1).sum() // processor.merge_size ** 2)


def check_outputs(requests: list[CaptionRequest], outputs: list[Any], processor: Any, tokenizer: Any) -> None:
    """Output i belongs to request i: its prompt holds that request's images and text; it was answered."""
    image_pad, vision_start = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>"])
    assert len(outputs) == len(requests)
    for request, output in zip(requests, outputs, strict=True):
        ids = list(output.prompt_token_ids)
        assert ids.count(vision_start) == len(render_request(request))
        assert ids.count(image_pad) == image_tokens(request, processor) > 0
        prompt_ids = tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        assert any(ids[i:i + len(prompt_ids)] == prompt_ids for i in range(len(ids))), "prompt text missing"
        assert output.finished and len(output.outputs) == 1
        answer = output.outputs[0]
        assert 0 < len(answer.token_ids) <= SAMPLING["max_tokens"]
        assert answer.finish_reason in ("length", "stop")


def test_a_mixed_batch_is_one_engine_call_with_images_in_the_prompts(captioner, chat_calls, image_processor):
    requests = clip_requests(captioner, 0, 96, 64)
    assert [len(render_request(r)) for r in requests] == [4, 3, 3, 2]  # 5 frames subsampled to max_images
    texts = captioner.caption(requests)
    assert len(chat_calls) == 1 and len(texts) == len(requests)
    assert all(isinstance(t, str) for t in texts) and any(texts)
    (call,) = chat_calls
    check_outputs(requests, call["outputs"], image_processor, captioner.llm.get_tokenizer())
    assert [len(conversation) for conversation in call["messages"]] == [1] * len(requests)  # no system prompt


def test_sampling_parameters_reach_the_engine_and_seeded_answers_repeat(captioner, chat_calls, vllm,
                                                                       monkeypatch):
    requests = clip_requests(captioner, 1, 64, 64)[:2]
    first, again = captioner.caption(requests), captioner.caption(requests)
    assert first == again
    params = chat_calls[0]["params"]
    assert isinstance(params, vllm.SamplingParams)
    assert {k: getattr(params, k) for k in SAMPLING} == SAMPLING
    raw = [output.outputs[0].token_ids for output in chat_calls[0]["outputs"]]
    monkeypatch.setattr(captioner, "sampling_params", vllm.SamplingParams(**SAMPLING | {"seed": 8}))
    captioner.caption(requests)
    assert [output.outputs[0].token_ids for output in chat_calls[-1]["outputs"]] != raw  # the seed is used
    greedy = SAMPLING | {"temperature": 0.0, "max_tokens": 3}
    monkeypatch.setattr(captioner, "sampling_params", vllm.SamplingParams(**greedy))
    captioner.caption(requests)
    assert all(len(output.outputs[0].token_ids) <= 3 for output in chat_calls[-1]["outputs"])


def test_a_pooled_batch_from_several_clips_is_answered_in_order(captioner, chat_calls, image_processor):
    sizes = [(96, 64), (48, 80), (128, 72), (64, 64), (80, 48), (112, 96)]
    pooled = [r for clip, (w, h) in enumerate(sizes) for r in clip_requests(captioner, 10 + clip, w, h)]
    texts = captioner.caption(pooled)
    assert len(chat_calls) == 1 and len(texts) == len(pooled) == 24
    check_outputs(pooled, chat_calls[0]["outputs"], image_processor, captioner.llm.get_tokenizer())
    # Answered alone, each request gets the answer it got in the pool: the pool keeps request order.
    alone = [captioner.caption([r])[0] for r in pooled[::5]]
    assert alone == texts[::5]


def test_batch_size_splits_a_pool_into_engine_calls(captioner, chat_calls, image_processor, monkeypatch):
    pooled = [r for clip in range(5) for r in clip_requests(captioner, 20 + clip, 64 + 16 * clip, 64)]
    monkeypatch.setattr(captioner, "cfg", captioner.cfg.model_copy(update={"batch_size": 8}))
    texts = captioner.caption(pooled)
    assert [len(call["messages"]) for call in chat_calls] == [8, 8, 4] and len(texts) == 20
    outputs = [output for call in chat_calls for output in call["outputs"]]
    check_outputs(pooled, outputs, image_processor, captioner.llm.get_tokenizer())


def test_a_system_prompt_leads_each_conversation(captioner, chat_calls, monkeypatch):
    monkeypatch.setattr(captioner, "cfg", captioner.cfg.model_copy(update={"system_prompt": "Be precise."}))
    requests = clip_requests(captioner, 30, 64, 64)[:2]
    captioner.caption(requests)
    tokenizer = captioner.llm.get_tokenizer()
    system = tokenizer("<|im_start|>system\nbe precise.<|im_end|>", add_special_tokens=False)["input_ids"]
    for conversation, output in zip(chat_calls[0]["messages"], chat_calls[0]["outputs"], strict=True):
        assert conversation[0] == {"role": "system", "content": "Be precise."}
        assert list(output.prompt_token_ids)[:len(system)] == system  # replaces the template's default


def prefix_prompts(**visual: Any) -> PromptConfig:
    return PromptConfig(visual=VisualPromptConfig(max_images=4, max_side=160, **visual))


def prefix_clip(seed: int, prompts: PromptConfig) -> list[CaptionRequest]:
    """A clip's entities request and two instance requests (112 px frames: 16 vision tokens each)."""
    frames = noise_frames(5, 112, 112, seed=seed)
    boxes = [(0.1, 0.1, 0.5, 0.6), None, (0.2, 0.1, 0.6, 0.6), (0.2, 0.2, 0.6, 0.7), None]
    cup = InstanceInfo(1, "cup", boxes)
    dog = InstanceInfo(2, "dog", [None, (0.5, 0.4, 0.9, 0.9), (0.5, 0.4, 0.9, 0.9), None, None])
    return [make_request("entities", frames, prompts), make_request("instance", frames, prompts, cup, [dog]),
            make_request("instance", frames, prompts, dog, [cup])]


def test_prefix_mode_requests_of_a_clip_share_a_prefix_that_the_cache_reuses(captioner, chat_calls):
    """The clip's entities request runs first (as in the pipeline); its instance requests then find the shared
    clean frames in vLLM's prefix cache. Drawn-box requests share nothing beyond the chat preamble."""
    tokenizer = captioner.llm.get_tokenizer()
    vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    entities, *instances = prefix_clip(40, prefix_prompts(mode="prefix", marked_frames=1))
    captioner.caption([entities])
    captioner.caption(instances)
    (first,), (second, third) = chat_calls[0]["messages"], chat_calls[1]["messages"]
    shared = first[-1]["content"][:3]  # the three shared frames, then the entities prompt
    assert [part["type"] for part in shared] == ["image_pil"] * 3
    assert second[-1]["content"][:3] == shared == third[-1]["content"][:3]  # PIL images compare by pixels
    assert second[-1]["content"][3]["type"] == "image_pil" != first[-1]["content"][3]["type"]  # marked frame
    ids = [list(call["outputs"][i].prompt_token_ids) for call, i in [(chat_calls[0], 0), (chat_calls[1], 0),
                                                                     (chat_calls[1], 1)]]
    end = [i for i, token in enumerate(ids[0]) if token == vision_end][2] + 1  # through the third image
    assert end >= 64 and ids[1][:end] == ids[0][:end] == ids[2][:end]
    cached = [output.num_cached_tokens for output in chat_calls[1]["outputs"]]
    assert all(32 <= hit <= end for hit in cached), (cached, end)  # whole 32-token blocks of the prefix
    assert all(output.num_cached_tokens < 32 for output in chat_calls[0]["outputs"])  # a new clip: a miss

    entities, *instances = prefix_clip(41, prefix_prompts(mode="boxes"))
    captioner.caption([entities])
    captioner.caption(instances)
    assert all(output.num_cached_tokens < 32 for output in chat_calls[3]["outputs"])


def test_pil_images_reach_the_engine_unencoded_and_answer_as_data_urls_do(captioner, chat_calls, monkeypatch):
    requests = clip_requests(captioner, 50, 96, 64)

    def no_encoding(*args, **kwargs):
        raise AssertionError("an image was encoded")

    with monkeypatch.context() as patched:
        patched.setattr(Image.Image, "save", no_encoding)
        direct = captioner.caption(requests)
    monkeypatch.setattr(captioner, "cfg", captioner.cfg.model_copy(update={"image_format": "png"}))
    assert captioner.caption(requests) == direct
    pil, urls = chat_calls
    assert {part["type"] for conversation in pil["messages"] for part in conversation[-1]["content"]} \
        == {"image_pil", "text"}
    assert any(part["type"] == "image_url" for part in urls["messages"][0][-1]["content"])
    for a, b in zip(pil["outputs"], urls["outputs"], strict=True):  # same prompts, same seeded answers
        assert list(a.prompt_token_ids) == list(b.prompt_token_ids)
        assert list(a.outputs[0].token_ids) == list(b.outputs[0].token_ids)


def test_video_requests_are_answered_with_video_tokens_beside_image_requests(
        captioner, chat_calls, generate_calls, tiny_vlm):
    import transformers

    prompts = PromptConfig(visual=VisualPromptConfig(max_images=4, max_side=160, video=True))
    frames = noise_frames(6, 112, 84, seed=60)
    cup = InstanceInfo(1, "cup", [(0.1, 0.1, 0.5, 0.6)] * 6)
    requests = [make_request("global", frames, prompts), make_request("instance", frames, prompts, cup),
                make_request("entities", frames, prompts)]
    texts = captioner.caption(requests)
    assert len(texts) == 3 and any(texts)
    assert len(generate_calls) == 1 and len(chat_calls) == 1  # videos through generate, images through chat
    assert len(generate_calls[0]["outputs"]) == 2 and len(chat_calls[0]["outputs"]) == 1
    tokenizer = captioner.llm.get_tokenizer()
    video_pad, image_pad = tokenizer.convert_tokens_to_ids(["<|video_pad|>", "<|image_pad|>"])
    processor = transformers.AutoVideoProcessor.from_pretrained(tiny_vlm)
    grid = processor(videos=[np.stack([np.asarray(im) for im in render_request(requests[0])])],
                     return_tensors="np")["video_grid_thw"]
    expected = int(np.prod(grid)) // processor.merge_size ** 2
    for request, output in zip([requests[0], requests[2]], generate_calls[0]["outputs"], strict=True):
        ids = list(output.prompt_token_ids)
        assert ids.count(video_pad) == expected > 0 and image_pad not in ids
        prompt_ids = tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        assert any(ids[i:i + len(prompt_ids)] == prompt_ids for i in range(len(ids)))
        assert output.finished and 0 < len(output.outputs[0].token_ids) <= SAMPLING["max_tokens"]
    assert "a video clip" in requests[0].prompt
    (instance_output,) = chat_calls[0]["outputs"]
    assert video_pad not in instance_output.prompt_token_ids and image_pad in instance_output.prompt_token_ids
