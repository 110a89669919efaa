"""The vLLM backend with an injected stand-in `vllm` module, for what vLLM's CPU engine cannot show: the
GPU-only engine arguments (tensor_parallel_size, gpu_memory_utilization, prefix caching) reaching
`vllm.LLM`, plus the missing-extra message in the main venv. Batching, chat messages, images and sampling
run on the real engine in the vllm tier (tests/vllm_tier, `bash scripts/test-vllm.sh`)."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from instvl.annotate.caption import InstanceInfo, VLLMCaptioner
from instvl.deps import MissingDependencyError
from instvl.testing.media import noise_frames


@dataclass
class Recorder:
    engine_kwargs: dict = field(default_factory=dict)
    sampling_kwargs: dict = field(default_factory=dict)
    chat_calls: list[dict] = field(default_factory=list)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Install a `vllm` module whose LLM records its arguments and answers from the conversation."""
    recorder = Recorder()

    class SamplingParams:
        def __init__(self, **kwargs) -> None:
            recorder.sampling_kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs) -> None:
            recorder.engine_kwargs = kwargs

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            call = {"messages": messages, "params": sampling_params, "use_tqdm": use_tqdm}
            recorder.chat_calls.append(call)
            return [_output(conversation) for conversation in messages]

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return recorder


def _output(conversation: list[dict]) -> types.SimpleNamespace:
    content = conversation[-1]["content"]
    images = sum(part["type"] == "image_url" for part in content)
    answer = f"<|im_start|>assistant\nSure, here is the caption: A clip with {images} images.<|im_end|>"
    return types.SimpleNamespace(outputs=[types.SimpleNamespace(text=answer)])


def test_engine_and_sampling_params_come_from_the_config(fake_vllm: Recorder) -> None:
    """GPU-only arguments (tensor parallelism, memory share) cannot be exercised on the CPU engine."""
    cfg = VLLMCaptioner.Config(model="Qwen/Qwen2.5-VL-7B-Instruct", max_tokens=99, temperature=0.2, seed=3,
                               tensor_parallel_size=2, mm_processor_kwargs={"max_pixels": 1000},
                               engine_kwargs={"enable_prefix_caching": True},
                               prompts={"visual": {"max_images": 5}})
    captioner = cfg.build()
    assert captioner.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    engine = fake_vllm.engine_kwargs
    assert engine["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert engine["limit_mm_per_prompt"] == {"image": 5}
    assert engine["tensor_parallel_size"] == 2 and engine["seed"] == 3
    assert engine["mm_processor_kwargs"] == {"max_pixels": 1000} and engine["enable_prefix_caching"] is True
    assert fake_vllm.sampling_kwargs == {"max_tokens": 99, "temperature": 0.2, "top_p": 1.0,
                                         "repetition_penalty": 1.05, "seed": 3}


def test_requests_are_sent_as_batched_chat_conversations(fake_vllm: Recorder) -> None:
    """The message layout in the main suite (no vLLM there); the vllm tier runs it on the real engine."""
    captioner = VLLMCaptioner.Config(batch_size=2).build()
    target = InstanceInfo(4, "cup", [(0.1, 0.1, 0.4, 0.4), None, (0.2, 0.1, 0.5, 0.4)])
    requests = [captioner.request("global", noise_frames(1, 30, 20)),
                captioner.request("global", noise_frames(2, 30, 20)),
                captioner.request("instance", noise_frames(3, 30, 20), target)]
    captions = captioner.caption(requests)
    assert captions == ["A clip with 1 images.", "A clip with 2 images.", "A clip with 2 images."]
    assert [len(call["messages"]) for call in fake_vllm.chat_calls] == [2, 1]
    first = fake_vllm.chat_calls[0]
    assert first["use_tqdm"] is False and first["params"] is captioner.sampling_params
    content = fake_vllm.chat_calls[1]["messages"][0][-1]["content"]
    assert [part["type"] for part in content] == ["image_url", "image_url", "text"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[-1]["text"] == requests[2].prompt and 'labelled "ID: 4"' in content[-1]["text"]


def test_system_prompt_leads_each_conversation(fake_vllm: Recorder) -> None:
    captioner = VLLMCaptioner.Config(system_prompt="Be precise.").build()
    captioner.caption([captioner.request("entities", noise_frames(1, 30, 20))])
    conversation = fake_vllm.chat_calls[0]["messages"][0]
    assert conversation[0] == {"role": "system", "content": "Be precise."}
    assert conversation[1]["role"] == "user"


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'instvl\[vllm\]'"):
        VLLMCaptioner.Config().build()
