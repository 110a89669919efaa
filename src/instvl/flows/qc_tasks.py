"""The Prefect flows and tasks of the QC round (imported only after the environment is set)."""

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from instvl.qa.pull import PullConfig, pull_dataset
from instvl.qa.push import PushConfig, push_dataset
from instvl.qa.report import ReportConfig
from instvl.qa.report import main as report_main
from instvl.qa.round import QCRoundConfig, summary_dict


def _sections(config: dict[str, Any]) -> dict[str, Any]:
    return QCRoundConfig.model_validate(config).sections()


@task(cache_policy=NO_CACHE, task_run_name="push {root}")
def push_task(config: dict[str, Any], root: str) -> dict[str, Any]:
    """Route and push; resumable, so a retry after the server went away continues the same push."""
    return summary_dict(push_dataset(PushConfig(root=root, **_sections(config))))


@task(cache_policy=NO_CACHE, task_run_name="pull {root} -> {output}")
def pull_task(config: dict[str, Any], root: str, output: str) -> dict[str, Any]:
    return summary_dict(pull_dataset(PullConfig(root=root, output=output, **_sections(config))))


@task(cache_policy=NO_CACHE, task_run_name="report {root}")
def report_task(root: str) -> None:
    report_main(ReportConfig(root=root))


@flow(name="qc-push")
def qc_push_flow(config: dict[str, Any]) -> dict[str, Any]:
    cfg = QCRoundConfig.model_validate(config)
    retrying = push_task.with_options(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_s)
    summary = retrying(config, cfg.root)
    get_run_logger().info("pushed %s: %s", cfg.root, summary)
    return summary


@flow(name="qc-pull")
def qc_pull_flow(config: dict[str, Any]) -> dict[str, Any]:
    cfg = QCRoundConfig.model_validate(config)
    # A retried pull rewrites units a failed attempt may have finished: only safe with overwrite.
    retries = cfg.retries if cfg.pull.overwrite else 0
    retrying = pull_task.with_options(retries=retries, retry_delay_seconds=cfg.retry_delay_s)
    output = cfg.pull_output()
    summary = retrying(config, cfg.root, output)
    report_task(output)
    get_run_logger().info("merged reviews of %s into %s: %s", cfg.root, output, summary)
    return summary
