"""Task runners for the flows: the local thread pool, or Ray for one-GPU-per-task scale-out."""

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

from pydantic import Field

from instvl.config import BaseConfig
from instvl.flows.prefect_env import worker_environment


class RunnerConfig(BaseConfig):
    """Where a flow's unit tasks run."""

    kind: Literal["local", "ray"] = "local"
    """local: a thread pool in this process; ray: tasks on a Ray cluster (local or `address`)."""
    max_workers: int = Field(1, ge=1)
    """Concurrent units for the local runner (GPU stages: keep few, batch inside the unit)."""
    address: str | None = None
    """Ray cluster address (e.g. ray://head:10001 or auto); None starts a local Ray instance."""
    num_cpus: int | None = None
    """CPUs of the local Ray instance (None: all)."""
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    """1 on GPU clusters: one GPU per annotation unit; the model stays loaded in the worker."""
    temp_dir: str | None = None
    autoscaling: bool = False
    """The cluster adds nodes on demand: do not refuse per-task resources the current nodes lack."""


def build_task_runner(cfg: RunnerConfig) -> Any:
    """A Prefect task runner for `cfg`."""
    if cfg.kind == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    from instvl.deps import require

    require("prefect_ray", "ray")
    from prefect_ray import RayTaskRunner

    init: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": worker_environment()}}
    if cfg.address is None and cfg.num_cpus is not None:
        init["num_cpus"] = cfg.num_cpus
    if cfg.temp_dir:
        init["_temp_dir"] = cfg.temp_dir
    return RayTaskRunner(address=cfg.address, init_kwargs=init)


def task_resources(cfg: RunnerConfig) -> AbstractContextManager[Any]:
    """Per-task Ray resources; `max_calls=0` keeps a GPU worker (and its loaded models) alive."""
    if cfg.kind != "ray":
        return nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_cpus=cfg.cpus_per_task, num_gpus=cfg.gpus_per_task, max_calls=0)


def check_resources(cfg: RunnerConfig) -> None:
    """Fail fast, with a message, when no node of the Ray cluster can run one unit task.

    Ray would queue such a task forever (its autoscaler only logs an error every ~35 s).
    """
    if cfg.kind != "ray" or cfg.autoscaling:
        return
    import ray

    wanted = {"CPU": cfg.cpus_per_task, "GPU": cfg.gpus_per_task}
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if any(all(node.get(name, 0.0) >= amount for name, amount in wanted.items() if amount) for node in nodes):
        return
    have = ", ".join(f"{{CPU: {n.get('CPU', 0):g}, GPU: {n.get('GPU', 0):g}}}" for n in nodes) or "no nodes"
    raise RuntimeError(f"no node of the Ray cluster has CPU {cfg.cpus_per_task:g} and GPU "
                       f"{cfg.gpus_per_task:g} for one unit (nodes: {have}); lower "
                       "flow.runner.cpus_per_task / gpus_per_task, add nodes, or set "
                       "flow.runner.autoscaling=true if the cluster scales up on demand")
