"""Resumability: a build killed half-way (process group, server included) and a unit that keeps failing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

from tests.flows.procs import group_members, prefect_server_pids

from instvl.annotate import run as annotate_run
from instvl.annotate.plan import load_plan, make_plan
from instvl.datasets.manifest import done_units, unit_done
from instvl.datasets.reader import read_table
from instvl.datasets.validate import validate_dataset
from instvl.flows import build_corpus as build_module


def sample_ids(root: Path) -> list[str]:
    return sorted(read_table(root, columns=["sample_id"]).column("sample_id").to_pylist())


def start_build(media: Path, out: Path, log_file: Path, *overrides: str) -> subprocess.Popen:
    """`python -m instvl build` in its own process group, with its own embedded Prefect server."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    sets = [arg for item in ["flow.progress=false", *overrides] for arg in ("--set", item)]
    command = [sys.executable, "-m", "instvl", "build", str(media), str(out), "--config", "annotate/fake",
               *sets]
    with open(log_file, "wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_first_unit(process: subprocess.Popen, out: Path, log_file: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not list((out / "stats").glob("unit-*.stats.json")):
        assert process.poll() is None, f"build exited early ({process.returncode}):\n{log_file.read_text()}"
        assert time.monotonic() < deadline, f"no unit finished in {timeout_s} s:\n{log_file.read_text()}"
        time.sleep(0.05)


def kill_group(pgid: int, timeout_s: float = 20) -> None:
    """SIGKILL the whole group (the build and its embedded server) and wait until none is left."""
    os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_killed_build_resumes_to_the_same_samples(prefect_harness, synth_media, make_config, tmp_path):
    media = synth_media(num_samples=8, image_fraction=0.25)
    reference, out = tmp_path / "reference", tmp_path / "corpus"
    cfg = make_config(media, out, "out.sources_per_unit=1")
    assert annotate_run.main(make_config(media, reference, "out.sources_per_unit=1")) == 0  # uninterrupted

    log_file = tmp_path / "build.log"
    process = start_build(media, out, log_file, "out.sources_per_unit=1")
    try:
        wait_for_first_unit(process, out, log_file)
        servers = set(prefect_server_pids()) & set(group_members(process.pid))
        assert servers, "the build's embedded Prefect server should run in its process group"
    finally:
        kill_group(process.pid)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not group_members(process.pid), "processes of the killed build survived (orphaned server?)"
    assert not set(servers) & set(prefect_server_pids())
    finished = done_units(out)
    assert 1 <= len(finished) < 8, f"the kill should land mid-build, {len(finished)} of 8 units were done"

    summary = build_module.build_corpus(cfg)
    assert summary["failed"] == {} and summary["ran"] == 8 - len(finished)
    assert [u.unit_id for u in load_plan(out).units] == [f"unit-{i:05d}" for i in range(8)]
    ids = sample_ids(out)
    assert ids == sample_ids(reference) and len(ids) == len(set(ids)) == 8
    report = validate_dataset(out)
    assert report.ok and not report.warnings, report.summary()  # no temporary files of the killed run left


def task_runs_of(flow_run_id: str, expected_runs: int, timeout_s: float = 20.0) -> dict[str, object]:
    """Task runs of a flow run by name, polled until the failed one shows all its attempts (events lag)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    flow_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[UUID(flow_run_id)]))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = {run.name: run for run in client.read_task_runs(task_run_filter=flow_filter)}
            most = max((r.run_count for r in runs.values()), default=0)
            if most >= expected_runs or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id)).state.type.value


def test_a_failing_unit_fails_alone_in_a_task_of_several_units(prefect_harness, synth_media, make_config,
                                                               tmp_path, monkeypatch):
    media = synth_media(num_samples=6, image_fraction=0.4)
    out = tmp_path / "corpus"
    cfg = make_config(media, out, "out.sources_per_unit=2", "flow.units_per_task=2", "flow.retries=1",
                      "flow.retry_delay_s=0.1")
    assert len(make_plan(cfg).units) == 3
    blocker = out / "shards" / "unit-00000-000.parquet"  # the first unit of the first task fails
    blocker.mkdir(parents=True)

    summaries = []
    real_run = build_module.run_flow
    monkeypatch.setattr(build_module, "run_flow", lambda c: summaries.append(real_run(c)) or summaries[-1])
    assert build_module.main(cfg) == 1
    summary = summaries[0]
    assert list(summary["failed"]) == ["unit-00000"]
    assert "unit-00000-000.parquet" in summary["failed"]["unit-00000"]
    assert [unit_done(out, u) for u in ("unit-00000", "unit-00001", "unit-00002")] == [False, True, True]
    runs = task_runs_of(summary["flow_run_id"], expected_runs=2)
    assert sorted(runs) == ["unit unit-00000..unit-00001", "unit unit-00002"]
    assert runs["unit unit-00000..unit-00001"].run_count == 2  # retried: its done unit skipped, then failed

    blocker.rmdir()
    assert build_module.main(cfg) == 0
    assert validate_dataset(out).ok and len(sample_ids(out)) == 6


def test_failing_unit_is_retried_reported_and_redone(prefect_harness, synth_media, make_config, tmp_path,
                                                     capsys, monkeypatch):
    media = synth_media(num_samples=6, image_fraction=0.4)
    out = tmp_path / "corpus"
    cfg = make_config(media, out, "out.sources_per_unit=2", "flow.retries=2", "flow.retry_delay_s=0.1")
    assert len(make_plan(cfg).units) == 3
    # A folder left where unit-00001's shard must go: the unit itself fails on every attempt.
    blocker = out / "shards" / "unit-00001-000.parquet"
    blocker.mkdir(parents=True)
    summaries = []
    real_run = build_module.run_flow
    monkeypatch.setattr(build_module, "run_flow", lambda c: summaries.append(real_run(c)) or summaries[-1])

    assert build_module.main(cfg) == 1
    err = capsys.readouterr().err
    assert "FAILED unit-00001" in err and "unit-00001-000.parquet" in err
    assert [unit_done(out, u) for u in ("unit-00000", "unit-00001", "unit-00002")] == [True, False, True]
    assert list(summaries[0]["failed"]) == ["unit-00001"]
    runs = task_runs_of(summaries[0]["flow_run_id"], expected_runs=3)
    assert runs["unit unit-00001"].run_count == 3  # the first attempt and flow.retries=2 retries
    assert runs["unit unit-00000"].run_count == 1
    assert flow_run_state(summaries[0]["flow_run_id"]) == "FAILED"  # the UI tells what the exit code says

    blocker.rmdir()
    assert build_module.main(cfg) == 0
    assert summaries[1]["ran"] == 1 and summaries[1]["failed"] == {}
    assert flow_run_state(summaries[1]["flow_run_id"]) == "COMPLETED"
    assert validate_dataset(out).ok and len(sample_ids(out)) == 6

