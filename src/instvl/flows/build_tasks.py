"""The Prefect flow and task of the corpus build (imported only after the environment is set)."""

import os
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import output_root, require_plan
from instvl.annotate.units import UnitsFailed, run_units
from instvl.datasets.manifest import UnitStats, unit_done, write_manifest
from instvl.flows.config import BuildConfig
from instvl.flows.prefect_env import attach_library_logs
from instvl.flows.runners import RunnerConfig, build_task_runner, check_resources, task_resources


# Our stats files decide what is skipped, not Prefect's cache: NO_CACHE also avoids hashing inputs.
@task(cache_policy=NO_CACHE, task_run_name="unit {label}")
def annotate_units(config: dict[str, Any], unit_ids: list[str], label: str) -> list[UnitStats]:
    """Units (`flow.units_per_task`) annotated one after another through one engine, each written as its
    own shard (idempotent: a done unit is skipped; a retry redoes only the units not done)."""
    # Workers on other machines lack the driver's logging settings file; this attaches the handler anyway.
    attach_library_logs(os.environ.get("INSTVL_LOG_LEVEL", "INFO"))
    stats = run_units(AnnotateConfig.model_validate(config), unit_ids)
    for unit in stats:
        get_run_logger().info("%s: %d samples, %d quarantined", unit.unit_id, unit.rows, unit.quarantined)
    return stats


def _label(unit_ids: list[str]) -> str:
    return unit_ids[0] if len(unit_ids) == 1 else f"{unit_ids[0]}..{unit_ids[-1]}"


@flow(name="build-corpus", log_prints=True)
def build_corpus_flow(config: dict[str, Any]) -> dict[str, Any] | State:
    """Read the plan (made by the caller: the input is listed once), map the pending units, collect
    failures, rebuild the manifest. The run ends FAILED (its state carries the same summary) when any
    unit failed, so the UI and automations see what the exit code says."""
    cfg = BuildConfig.model_validate(config)
    logger = get_run_logger()
    root = output_root(cfg)
    plan = require_plan(root)
    unit_config = cfg.annotation().model_dump(mode="json")
    pending = [u.unit_id for u in plan.units if not unit_done(root, u.unit_id)]
    logger.info("%d units planned, %d to do", len(plan.units), len(pending))
    size = cfg.flow.units_per_task
    timeout = cfg.flow.unit_timeout_s
    unit_task = annotate_units.with_options(
        retries=cfg.flow.retries, retry_delay_seconds=_backoff(cfg.flow.retry_delay_s, cfg.flow.retries),
        timeout_seconds=None if timeout is None else timeout * size)
    failed: dict[str, str] = {}
    if pending:
        check_resources(cfg.flow.runner)
    tasks = [pending[i:i + size] for i in range(0, len(pending), size)]
    with task_resources(cfg.flow.runner):
        futures = [unit_task.submit(unit_config, units, _label(units)) for units in tasks]
    for units, future in zip(tasks, futures, strict=True):
        future.wait()
        if future.state.is_failed() or future.state.is_crashed():
            errors = _errors_of(future.state)
            for unit_id in units:
                if not unit_done(root, unit_id):
                    failed[unit_id] = errors.get(unit_id) or errors.get("", "failed")
                    logger.error("unit %s failed after %d retries: %s", unit_id, cfg.flow.retries,
                                 failed[unit_id])
    summary = {"planned": len(plan.units), "ran": len(pending), "failed": failed,
               "manifest": write_manifest(root), "flow_run_id": str(runtime.flow_run.id)}
    if failed:
        return Failed(message=f"{len(failed)} of {len(pending)} units failed: {', '.join(failed)}",
                      data=summary)
    return summary


def run_build_flow(config: dict[str, Any]) -> dict[str, Any]:
    """The flow with the task runner its config asks for (local threads or Ray); its summary, also when
    the run ended FAILED because units failed (the flow's own errors are raised)."""
    runner = build_task_runner(RunnerConfig.model_validate(config["flow"]["runner"]))
    state = build_corpus_flow.with_options(task_runner=runner)(config, return_state=True)
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, dict):
        return summary
    state.result()  # the flow itself failed or crashed: raise its exception
    raise RuntimeError(f"build flow ended {state.name}: {state.message}")


def _backoff(base: float, retries: int) -> list[float]:
    return [base * 2**i for i in range(retries)]


def _errors_of(state: State) -> dict[str, str]:
    """The error of each failed unit of a task (key "": the task's error, for units not named)."""
    try:
        state.result(raise_on_failure=True)
    except UnitsFailed as err:  # the task's own exception, re-raised by Prefect
        return {unit: f"{type(e).__name__}: {e}" for unit, e in err.failures.items()}
    except BaseException as err:
        return {"": f"{type(err).__name__}: {err}"}
    return {"": state.message or state.name or "failed"}
