"""Distributed training plumbing: torchrun detection, process groups, DDP/FSDP wrapping, per-rank seeds.

`torchrun --nproc_per_node N -m instvl train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; without them the
run is a single process. The backend is NCCL on CUDA and gloo on CPU. DDP works on both; FSDP
(`torch.distributed.fsdp.fully_shard`, FSDP2) shards parameters and optimizer state, and full
(unsharded) state dicts are gathered for checkpoints. `gather_rows` is the gradient-preserving
all-gather the contrastive losses score against.
"""

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from instvl.deps import require

torch = require("torch", "train")
import torch.distributed as dist  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.autograd import Function  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    strategy: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment, (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> str:
    """'auto' -> this rank's GPU when CUDA is available, else 'cpu'; 'cuda' -> 'cuda:<local rank>'."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
    return name


def init_distributed(strategy: str = "ddp", device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the torchrun process group when there is one; pick this rank's device."""
    rank, world, local = env_ranks()
    device = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if strategy == "none":
            raise ValueError(f"{world} processes were launched but run.strategy is 'none'; use ddp or fsdp")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    return DistInfo(rank, world, local, device, strategy if world > 1 else "none")


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch; ranks get different streams (masks and dropout differ per rank)."""
    value = seed + 1000 * rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def wrap_model(model: Any, info: DistInfo) -> Any:
    """The model as the training step uses it: plain, DDP or FSDP2-sharded."""
    if not info.distributed:
        return model
    if info.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(info.device).index] if info.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
    if info.strategy == "fsdp":
        return shard_model(model)
    raise ValueError(f"unknown run.strategy {info.strategy!r}")


FSDP_TOWERS = ("student", "text")
"""Children whose repeated blocks become FSDP units: their weights are only touched inside their forward."""


def shard_model(model: Any) -> Any:
    """FSDP2: each trainable block of the student and text towers is a unit; the root holds the rest.

    Everything else (projections, heads, temperatures, the frozen teacher) lives in the root unit, which
    is gathered for the whole forward, so code that reads those weights outside a submodule's forward
    (e.g. zero-weighted terms that keep unused parameters in the graph) still sees plain tensors.
    """
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    for name in FSDP_TOWERS:
        tower = getattr(model, name, None)
        blocks = [m for m in tower.modules() if isinstance(m, nn.ModuleList)] if tower is not None else []
        for block in (b for blocks_list in blocks for b in blocks_list):
            if any(p.requires_grad for p in block.parameters()):
                fully_shard(block)
    fully_shard(model)
    return model


def unwrap(model: Any) -> Any:
    """The user's module inside a DDP wrapper (FSDP2 shards in place, so it is the module itself)."""
    return getattr(model, "module", model)


def full_state_dict(model: Any, info: DistInfo) -> dict[str, Any]:
    """The unsharded model state on CPU (a collective under FSDP: every rank must call it)."""
    if info.strategy != "fsdp":
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Means of scalar metrics over ranks (identity in a single process)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return {k: v / info.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


class _GatherRows(Function):
    """All-gather of rows; the backward sums the gradient over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:
        rank, biggest = dist.get_rank(), max(sizes)
        padded = x.new_zeros((biggest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.start = sizes, sum(sizes[:rank])
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank_size = ctx.sizes[dist.get_rank()]
        return grad[ctx.start : ctx.start + rank_size], None


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_rank() -> int:
    """This process's rank in the initialised process group (0 outside one)."""
    return dist.get_rank() if is_distributed() else 0


def process_count() -> int:
    """The number of ranks in the initialised process group (1 outside one)."""
    return dist.get_world_size() if is_distributed() else 1


def total_count(count: int, device: Any) -> int:
    """`count` summed over the ranks of the initialised process group (`count` outside one)."""
    if not is_distributed():
        return count
    total = torch.tensor([count], dtype=torch.long, device=device)
    dist.all_reduce(total)
    return int(total)


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Rows of `x` from every rank (ranks may hold different counts, zero included) and this rank's offset."""
    if not is_distributed():
        return x, 0
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    return _GatherRows.apply(x, sizes), sum(sizes[: dist.get_rank()])


def full_optimizer_state(model: Any, optimizer: Any, info: DistInfo) -> dict[str, Any]:
    """The optimizer state with unsharded tensors (a collective under FSDP)."""
    if info.strategy != "fsdp":
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def key_mismatch(model: Any, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of a full state dict against the model (FSDP2 keeps the plain names).

    Checked before `load_full_states`, which cannot tell: it fills keys a full state lacks with the
    model's current values.
    """
    expected = set(unwrap(model).state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def load_full_states(model: Any, optimizer: Any, model_state: dict[str, Any], optim_state: dict[str, Any],
                     info: DistInfo) -> None:
    """Load unsharded model and optimizer states into a sharded (FSDP) model and its optimizer.

    Lenient about keys (a state without the frozen teacher keeps the model's own teacher), so check
    them first with `key_mismatch`.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)


@contextmanager
def full_weights(model: Any, info: DistInfo) -> Iterator[Any]:
    """The user's module with weights usable outside `forward` (e.g. `encode_video` in an evaluation).

    DDP and single processes need nothing. Under FSDP2 the root unit's parameters (embeddings, heads,
    projections) are gathered only around the root's `forward`, so they are gathered here for the
    duration; the block units still gather their own weights in their forward hooks. A collective:
    every rank must enter it and run the same forwards inside.
    """
    module = unwrap(model)
    if info.strategy != "fsdp":
        yield module
        return
    module.unshard()
    try:
        yield module
    finally:
        module.reshard()
