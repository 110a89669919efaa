"""The GPU memory plan of an annotation preset: each model's stated share on one GPU, vLLM's fraction from
what remains, and an error with the numbers, at start, when the models cannot fit.
"""

from dataclasses import dataclass

from instvl.annotate.config import MemoryPlanConfig


class MemoryPlanError(ValueError):
    """The models of a preset do not fit on the GPU; the message gives the numbers."""


@dataclass(frozen=True)
class MemoryBudget:
    """The resolved plan: GiB per model on a GPU of `gpu_gib`, and the fraction vLLM may take."""

    gpu_gib: float
    detector_gib: float
    tracker_gib: float
    reserve_gib: float
    captioner_gib: float
    vllm_fraction: float

    def describe(self) -> str:
        return (f"GPU {self.gpu_gib:.1f} GiB = detector {self.detector_gib:.1f} + tracker "
                f"{self.tracker_gib:.1f} + reserve {self.reserve_gib:.1f} + captioner "
                f"{self.captioner_gib:.1f} "
                f"(vLLM gpu_memory_utilization {self.vllm_fraction:.3f})")


def gpu_memory_gib(device: int = 0) -> float | None:
    """Total memory of CUDA device `device` in GiB, or None without torch or a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def plan_memory(plan: MemoryPlanConfig, captioner_in_process: bool) -> MemoryBudget | None:
    """Check that the models fit and set vLLM's share from what the detector, tracker and reserve leave.

    `captioner_in_process`: the captioner is a vLLM engine on this GPU (else it is a server elsewhere, or
    a node-local `vllm serve` that should be started with the fraction returned here). Returns None when
    the GPU size is unknown (no GPU and no `gpu_gib`); raises MemoryPlanError when the plan cannot fit.
    """
    gpu = plan.gpu_gib if plan.gpu_gib is not None else gpu_memory_gib(plan.device)
    if gpu is None:
        return None
    fixed = plan.detector.total_gib + plan.tracker.total_gib + plan.reserve_gib
    left = gpu - fixed
    need = plan.captioner.total_gib
    parts = (f"detector {plan.detector.total_gib:.1f} GiB (weights {plan.detector.weights_gib:.1f} + working "
             f"{plan.detector.working_gib:.1f}), tracker {plan.tracker.total_gib:.1f} GiB (weights "
             f"{plan.tracker.weights_gib:.1f} + working {plan.tracker.working_gib:.1f}), reserve "
             f"{plan.reserve_gib:.1f} GiB")
    if left <= 0 or need > left:
        raise MemoryPlanError(
            f"the models do not fit on a {gpu:.1f} GiB GPU: {parts} leave {left:.1f} GiB, and the captioner "
            f"needs {need:.1f} GiB (weights {plan.captioner.weights_gib:.1f} + least KV cache "
            f"{plan.captioner.working_gib:.1f}). Use a GPU with at least {fixed + need:.1f} GiB, a smaller "
            "preset, or a `vllm serve` on another GPU (captioner.kind=openai)")
    fraction = min(plan.max_fraction, left / gpu)
    if captioner_in_process and fraction * gpu < need:
        raise MemoryPlanError(f"max_fraction {plan.max_fraction} of a {gpu:.1f} GiB GPU is less than the "
                              f"captioner's {need:.1f} GiB")
    return MemoryBudget(gpu, plan.detector.total_gib, plan.tracker.total_gib, plan.reserve_gib,
                        fraction * gpu, round(fraction, 3))
