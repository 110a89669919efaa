"""`instvl build INPUT OUT`: the resumable corpus-build flow (Prefect 3).

    instvl build media/ out/corpus --config annotate/tiny
    instvl build s3://bucket/videos out/corpus --config annotate/gpu        # Ray, one GPU per unit

The flow plans the input into units (one output shard's worth of files each), skips units whose stats
file exists, maps one task per remaining unit (never one per video: a Prefect server struggles with
very many task runs) and rebuilds the manifest. A unit task retries with backoff; a unit that still
fails is reported and makes the command exit non-zero; its files are simply redone on the next run.
With no PREFECT_API_URL the flow runs on Prefect's embedded server, offline.
"""

import logging
import sys
from pathlib import Path
from typing import Any

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import PlanError, make_plan
from instvl.annotate.run import summarize
from instvl.flows.prefect_env import configure_environment, ensure_api_server

__all__ = ["BuildConfig", "build_corpus", "main"]

log = logging.getLogger(__name__)

BuildConfig = AnnotateConfig
"""`instvl build` takes the annotation config; its `flow` section sets runner, retries and progress."""


def build_corpus(cfg: AnnotateConfig) -> dict[str, Any]:
    """Run the flow and return its summary: units done, failed units with their errors, the manifest."""
    configure_environment()
    ensure_api_server()
    from instvl.flows.build_tasks import run_build_flow

    return run_build_flow(cfg.model_dump(mode="json"))


def main(cfg: AnnotateConfig) -> int:
    try:
        plan = make_plan(cfg)
    except PlanError as err:
        print(f"instvl build: {err}", file=sys.stderr)
        return 2
    from instvl.flows.progress import BuildProgress

    with BuildProgress(cfg.output, plan.num_sources, enabled=cfg.flow.progress):
        summary = build_corpus(cfg)
    print(summarize(summary["manifest"], Path(cfg.output)))
    for unit_id, error in summary["failed"].items():
        print(f"FAILED {unit_id}: {error}  (rerun the same command to retry it)", file=sys.stderr)
    return 1 if summary["failed"] else 0
