"""The GPU memory plan: vLLM gets what the other models leave, and a plan that cannot fit fails at start
with the numbers, before any model is built."""

import pytest

from instvl.annotate.config import MemoryPlanConfig, ModelMemoryConfig
from instvl.annotate.memory import MemoryPlanError, plan_memory
from instvl.annotate.units import engines_for, memory_budget
from instvl.config import load_config
from instvl.flows.config import BuildConfig


def gpu_plan(gib: float) -> MemoryPlanConfig:
    return MemoryPlanConfig(gpu_gib=gib, detector=ModelMemoryConfig(weights_gib=0.5, working_gib=2.5),
                      tracker=ModelMemoryConfig(weights_gib=0.5, working_gib=3.5),
                      captioner=ModelMemoryConfig(weights_gib=15.5, working_gib=4.0), reserve_gib=1.5)


def test_memory_plan_gives_vllm_what_the_other_models_leave():
    budget = plan_memory(gpu_plan(80), captioner_in_process=True)
    assert budget is not None and budget.vllm_fraction == pytest.approx((80 - 8.5) / 80, abs=1e-3)
    assert plan_memory(gpu_plan(140), True).vllm_fraction == 0.92  # capped at max_fraction


def test_memory_plan_that_cannot_fit_fails_with_the_numbers():
    with pytest.raises(MemoryPlanError, match=r"24.0 GiB GPU: detector 3.0 GiB .* leave 15.5 GiB, and the "
                                              r"captioner needs 19.5 GiB"):
        plan_memory(gpu_plan(24), captioner_in_process=True)


@pytest.mark.parametrize(("preset", "fits", "too_small"), [("annotate/gpu", 40, 24),
                                                           ("annotate/gpu-server", 24, 8)])
def test_gpu_presets_state_a_plan_that_fails_at_start_on_a_small_gpu(preset, fits, too_small):
    """The presets' own numbers, on a fake GPU size: the check runs before any model is built."""
    cfg = load_config(BuildConfig, preset, [f"engine.memory.gpu_gib={fits}"]).annotation()
    budget = memory_budget(cfg)
    assert budget is not None and 0.3 < budget.vllm_fraction <= 0.92
    small = load_config(BuildConfig, preset, [f"engine.memory.gpu_gib={too_small}"]).annotation()
    with pytest.raises(MemoryPlanError, match=f"{too_small}.0 GiB GPU"):
        engines_for(small)  # fails before loading any model
