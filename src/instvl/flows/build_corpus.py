"""`instvl build INPUT OUT`: the resumable corpus-build flow (Prefect 3).

    instvl build media/ out/corpus --config annotate/tiny
    instvl build s3://bucket/videos out/corpus --config annotate/gpu        # Ray, one GPU per unit

`main` plans the input into units (one output shard's worth of files each, OUT/plan.json); the flow
reads that plan, skips units whose stats file exists, maps one task per remaining unit (never one per
video: a Prefect server struggles with very many task runs) and rebuilds the manifest. A unit task
retries with backoff; a unit that still fails is reported and makes the command exit non-zero; its
files are simply redone on the next run.
With no PREFECT_API_URL the flow runs on Prefect's embedded server, offline; library logs
(`instvl.*`) appear in the run's logs. Captions are cached in `out.cache_dir` (default OUTPUT/.cache):
point several builds at one folder to re-use captions after changes that do not touch the captioner.
A killed build leaves its embedded server running: run builds in their own process group and kill the
group (`setsid instvl build ...`, then `kill -9 -- -PGID`); the rerun resumes from the stats files.

On a GPU cluster (Ray):

    # every node: the same venv with instvl installed (`pip install 'instvl[annotate,flows,ray]'`),
    # the model weights (or a shared HF cache), read access to the input, and the output folder on a
    # shared filesystem mounted at the same path (workers write their shards there themselves)
    prefect server start --host 0.0.0.0 --port 4200             # one real server for the whole cluster
    ray start --head --port 6379 --disable-usage-stats          # head node
    ray start --address=HEAD:6379 --disable-usage-stats         # each worker node
    export PREFECT_API_URL=http://SERVER:4200/api                # a URL every node can reach
    instvl build s3://bucket/videos /shared/corpus --config annotate/gpu \
        --set flow.runner.address=auto                           # on the head node

The runner hands PREFECT_API_URL (and the logging settings) to every Ray worker through the job's
runtime env, so all units report to that one server: its UI (http://SERVER:4200) shows every unit,
its retries and its logs. Each unit asks Ray for `flow.runner.gpus_per_task` GPUs (1 in the gpu
presets) and its worker keeps the models loaded between units. `ray start` enables token auth: run
`instvl build` with the same HOME as `ray start` (or RAY_AUTH_MODE=token and the token file).
"""

import logging
import os
import sys
from pathlib import Path
from typing import Any

from instvl.annotate.plan import make_plan, plan_or_report
from instvl.datasets.manifest import summarize
from instvl.flows.config import BuildConfig
from instvl.flows.prefect_env import attach_library_logs, configure_environment, ensure_api_server

log = logging.getLogger(__name__)


def build_corpus(cfg: BuildConfig) -> dict[str, Any]:
    """Plan the input (extending OUT/plan.json) and run the flow over the plan; see `run_flow`."""
    make_plan(cfg)
    return run_flow(cfg)


def run_flow(cfg: BuildConfig) -> dict[str, Any]:
    """Run the flow over OUT/plan.json and return its summary: units planned and run, failed units with
    their errors, the manifest and the flow run id (to look the run up in the Prefect UI or client)."""
    configure_environment()
    ensure_api_server()
    attach_library_logs(os.environ.get("INSTVL_LOG_LEVEL", "INFO"))
    from instvl.flows.build_tasks import run_build_flow

    return run_build_flow(cfg.model_dump(mode="json"))


def main(cfg: BuildConfig) -> int:
    plan = plan_or_report(cfg, "instvl build")
    if plan is None:
        return 2
    from instvl.flows.progress import BuildProgress

    with BuildProgress(cfg.output, plan.num_sources, enabled=cfg.flow.progress):
        summary = run_flow(cfg)
    print(summarize(summary["manifest"], Path(cfg.output)))
    for unit_id, error in summary["failed"].items():
        print(f"FAILED {unit_id}: {error}  (rerun the same command to retry it)", file=sys.stderr)
    return 1 if summary["failed"] else 0
