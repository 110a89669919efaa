"""The vLLM backend with an injected stand-in `vllm` module, only for what vLLM's CPU engine cannot show:
GPU-only engine arguments (tensor_parallel_size, gpu_memory_utilization) reaching `vllm.LLM`, and the
missing-extra message where vLLM is not installed. Batching, chat messages, system prompts, images and
sampling run on the real engine in the vllm tier (tests/vllm_tier, `bash scripts/test-vllm.sh`)."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from instvl.annotate.caption import VLLMCaptioner
from instvl.deps import MissingDependencyError


@dataclass
class Recorder:
    engine_kwargs: dict = field(default_factory=dict)
    sampling_kwargs: dict = field(default_factory=dict)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Install a `vllm` module whose LLM and SamplingParams record their arguments."""
    recorder = Recorder()

    class SamplingParams:
        def __init__(self, **kwargs) -> None:
            recorder.sampling_kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs) -> None:
            recorder.engine_kwargs = kwargs

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return recorder


def test_engine_and_sampling_params_come_from_the_config(fake_vllm: Recorder) -> None:
    """GPU-only arguments (tensor parallelism, memory share) cannot be exercised on the CPU engine."""
    cfg = VLLMCaptioner.Config(model="Qwen/Qwen2.5-VL-7B-Instruct", max_tokens=99, temperature=0.2, seed=3,
                               tensor_parallel_size=2, gpu_memory_utilization=0.5,
                               mm_processor_kwargs={"max_pixels": 1000},
                               engine_kwargs={"enable_prefix_caching": True},
                               prompts={"visual": {"max_images": 5}})
    captioner = cfg.build()
    assert captioner.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    engine = fake_vllm.engine_kwargs
    assert engine["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert engine["limit_mm_per_prompt"] == {"image": 5, "video": 0}  # no memory reserved for videos
    assert engine["tensor_parallel_size"] == 2 and engine["gpu_memory_utilization"] == 0.5
    assert engine["seed"] == 3
    assert engine["mm_processor_kwargs"] == {"max_pixels": 1000} and engine["enable_prefix_caching"] is True
    assert fake_vllm.sampling_kwargs == {"max_tokens": 99, "temperature": 0.2, "top_p": 1.0,
                                         "repetition_penalty": 1.05, "seed": 3}


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'instvl\[vllm\]'"):
        VLLMCaptioner.Config().build()


def test_video_input_allows_one_video_per_prompt(fake_vllm: Recorder) -> None:
    VLLMCaptioner.Config(prompts={"visual": {"max_images": 6, "video": True}}).build()
    assert fake_vllm.engine_kwargs["limit_mm_per_prompt"] == {"image": 6, "video": 1}
