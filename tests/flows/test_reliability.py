"""Unattended builds: one build per root, SIGTERM or kill -9 stops the build and its server, a dead server
is reported.

Each test runs `python -m instvl build` (or `annotate run`) as its own process group, as a supervisor would.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.flows.procs import group_members, prefect_server_pids
from tests.flows.test_resume import kill_group, start_build, wait_for_first_unit

from instvl.datasets.manifest import done_units
from instvl.datasets.validate import validate_dataset
from instvl.flows import build_corpus as build_module

HOLD_ROOT = textwrap.dedent("""
    import sys, time
    from instvl.datasets.writer import lock_root
    with lock_root(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


@contextmanager
def build_past_its_first_unit(media: Path, out: Path, log_file: Path) -> Iterator[subprocess.Popen]:
    """`instvl build` (one file per unit) in its own process group, once its first unit is done; whatever
    the test did to it, the group is gone afterwards."""
    process = start_build(media, out, log_file, "out.sources_per_unit=1")
    try:
        wait_for_first_unit(process, out, log_file)
        yield process
    finally:
        if group_members(process.pid):
            kill_group(process.pid)


def resume_and_validate(make_config, media: Path, out: Path) -> dict:
    """Rerun the build in this process: every unit done, a valid dataset; returns the summary."""
    summary = build_module.build_corpus(make_config(media, out, "out.sources_per_unit=1"))
    assert summary["failed"] == {} and len(done_units(out)) == 8
    report = validate_dataset(out)
    assert report.ok and not report.warnings, report.summary()
    return summary


def test_second_build_on_the_same_root_is_refused_while_the_first_runs(synth_media, make_config, tmp_path):
    media, out = synth_media(num_samples=2), tmp_path / "corpus"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_ROOT, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in ("build", "annotate run"):
            argv = [sys.executable, "-m", "instvl", *command.split(), str(media), str(out), "--config",
                    "annotate/fake"]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert result.returncode == 2, result.stderr
            assert f"{out} is being built by another process" in result.stderr
            assert f"pid {holder.pid} on " in result.stderr
        assert not (out / "plan.json").exists()  # refused before planning
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_stops_the_build_and_its_server_and_the_rerun_resumes(prefect_harness, synth_media,
                                                                      make_config, tmp_path):
    media, out = synth_media(num_samples=8, image_fraction=0.25), tmp_path / "corpus"
    log_file = tmp_path / "build.log"
    with build_past_its_first_unit(media, out, log_file) as process:
        servers = set(prefect_server_pids(ancestor=process.pid))
        assert servers
        os.kill(process.pid, signal.SIGTERM)  # the driver only, as `kill PID` or a supervisor does
        process.wait(timeout=60)
        deadline = time.monotonic() + 20
        while servers & set(prefect_server_pids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not servers & set(prefect_server_pids()), "the embedded server outlived its build"
    assert process.returncode != 0, log_file.read_text()
    resume_and_validate(make_config, media, out)


def test_kill_9_of_the_driver_alone_takes_its_server_along_and_the_rerun_resumes(prefect_harness, synth_media,
                                                                                   make_config, tmp_path):
    media, out = synth_media(num_samples=8, image_fraction=0.25), tmp_path / "corpus"
    log_file = tmp_path / "build.log"
    with build_past_its_first_unit(media, out, log_file) as process:
        (server,) = prefect_server_pids(ancestor=process.pid)
        os.kill(process.pid, signal.SIGKILL)  # the driver only: no Python code runs, Linux signals the server
        process.wait(timeout=60)
        killed = time.monotonic()
        while server in prefect_server_pids() and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert server not in prefect_server_pids(), "the embedded server outlived its killed build"
    assert process.returncode == -signal.SIGKILL
    assert resume_and_validate(make_config, media, out)["ran"] < 8


def test_a_server_that_dies_mid_build_is_reported_within_seconds(synth_media, tmp_path):
    media, out = synth_media(num_samples=8, image_fraction=0.25), tmp_path / "corpus"
    log_file = tmp_path / "build.log"
    with build_past_its_first_unit(media, out, log_file) as process:
        (server,) = prefect_server_pids(ancestor=process.pid)
        os.kill(server, signal.SIGKILL)
        killed = time.monotonic()
        process.wait(timeout=60)
        assert time.monotonic() - killed < 30
    printed = Path(log_file).read_text()
    assert process.returncode == 3, printed
    assert "the Prefect API server" in printed and "rerun the same command to resume" in printed
    assert done_units(out)  # finished units are kept
