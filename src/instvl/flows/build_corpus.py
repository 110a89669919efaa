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
One build writes a root at a time (a second one is refused while the first holds OUT/.lock). The run
ends FAILED in Prefect when a unit failed. SIGINT or SIGTERM stops the build and its embedded server
and leaves resumable state; a server that dies mid-build ends the build within seconds with a message
(the manifest of the finished units written first). The embedded server dies with the driver, `kill -9`
included (Linux). It boots while the input is planned; a rerun with no unit left to do does not start
Prefect at all: it rewrites the manifest and prints the summary in a second or two.
docs/RELIABILITY.md says what a build guarantees.

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
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instvl.annotate.plan import Plan, PlanError, load_plan, make_plan, output_root, require_plan
from instvl.annotate.units import reopen_retryable_units
from instvl.datasets.manifest import summarize, unit_done, write_manifest
from instvl.datasets.writer import RootBusyError, lock_root
from instvl.flows.config import BuildConfig
from instvl.flows.prefect_env import (
    attach_library_logs,
    configure_environment,
    ensure_api_server,
    server_alive,
    start_api_server,
)

log = logging.getLogger(__name__)


def build_corpus(cfg: BuildConfig) -> dict[str, Any]:
    """Plan the input (extending OUT/plan.json) and run the flow over the plan; see `run_flow`."""
    with lock_root(output_root(cfg)):
        _plan(cfg)
        return run_flow(cfg)


def _plan(cfg: BuildConfig) -> Plan:
    plan = make_plan(cfg, new_version=cfg.flow.new_version)
    if cfg.flow.retry_quarantined:
        reopen_retryable_units(output_root(cfg))
    return plan


def run_flow(cfg: BuildConfig) -> dict[str, Any]:
    """Run the flow over OUT/plan.json and return its summary: units planned and run, failed units with
    their errors, the manifest and the flow run id (to look the run up in the Prefect UI or client).

    With every unit done there is nothing to orchestrate: the manifest is rebuilt without Prefect (no
    server, no flow run; `flow_run_id` is None), which takes a second instead of ~25.
    """
    root = output_root(cfg)
    plan = require_plan(root)
    if all(unit_done(root, unit.unit_id) for unit in plan.units):
        log.info("%d units planned, 0 to do", len(plan.units))
        return {"planned": len(plan.units), "ran": 0, "failed": {}, "manifest": write_manifest(root),
                "flow_run_id": None}
    configure_environment()
    if cfg.flow.runner.kind == "local":  # units run in this process: load their models while the server boots
        _load_models_in_background(cfg)
    ensure_api_server()
    attach_library_logs(os.environ.get("INSTVL_LOG_LEVEL", "INFO"))
    from instvl.flows.build_tasks import run_build_flow

    return run_build_flow(cfg.model_dump(mode="json"))


def _load_models_in_background(cfg: BuildConfig) -> None:
    """Build the models the local units will use (cached per process) in a thread, so that loading them
    overlaps the server's start-up. A load that fails is left to the first unit, which raises it, and is
    retried and reported as any unit fault."""
    from instvl.annotate.units import engines_for

    def load() -> None:
        try:
            engines_for(cfg.annotation())
        except Exception as err:  # the unit reports it
            log.debug("loading the models ahead failed: %s", err)

    threading.Thread(target=load, name="load-models", daemon=True).start()


def main(cfg: BuildConfig) -> int:
    cfg.check_weights()  # a missing checkpoint fails now, naming the model, not in every unit
    configure_environment()  # before prefect is imported
    try:
        root = output_root(cfg)
        with lock_root(root), _stop_on_signals():
            if _work_expected(cfg, root):
                start_api_server()  # boots (~6 s) while we plan; run_flow waits for it
            plan = _plan(cfg)
            from instvl.flows.progress import BuildProgress

            with BuildProgress(root, plan.num_sources, enabled=cfg.flow.progress), _server_watchdog(root):
                summary = run_flow(cfg)
    except (PlanError, RootBusyError) as err:
        print(f"instvl build: {err}", file=sys.stderr)
        return 2
    print(summarize(summary["manifest"], root))
    for unit_id, error in summary["failed"].items():
        print(f"FAILED {unit_id}: {error}  (rerun the same command to retry it)", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _work_expected(cfg: BuildConfig, root: Path) -> bool:
    """Whether the build will likely run units, judged before planning: not when OUT's plan is all done
    (a rerun; should the input have new files, the server starts after planning instead)."""
    if cfg.flow.new_version or cfg.flow.retry_quarantined:
        return True
    try:
        plan = load_plan(root)
    except PlanError:
        return True  # planning reports it
    return plan is None or not all(unit_done(root, unit.unit_id) for unit in plan.units)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM ends the build like Ctrl-C: Python unwinds, so the embedded server is stopped (atexit) and
    unit writers remove their temporary files; the stats files make the rerun resume."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"instvl build: stopped by {signal.Signals(signum).name}; rerun to resume")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _server_watchdog(root: Path, interval_s: float = 1.0, misses: int = 3) -> Iterator[None]:
    """End the build within seconds, with a message, when the Prefect API server dies under it.

    Without this the Prefect client retries and drains queued events for minutes and then raises a
    connection traceback. The finished units are kept (their stats files are written) and summarized
    in the manifest; the rerun resumes.
    """
    done = threading.Event()

    def watch() -> None:
        failed = 0
        while not done.wait(interval_s):
            failed = 0 if server_alive() else failed + 1
            if failed >= misses:
                try:
                    manifest = write_manifest(root)
                    kept = f"{manifest['num_units']} finished units are kept"
                except Exception as err:  # the message below matters more than the manifest
                    kept = f"the manifest could not be written ({err})"
                print(f"instvl build: the Prefect API server ({os.environ.get('PREFECT_API_URL')}) stopped "
                      f"answering; {kept}; rerun the same command to resume", file=sys.stderr, flush=True)
                os._exit(3)

    thread = threading.Thread(target=watch, name="prefect-server-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
