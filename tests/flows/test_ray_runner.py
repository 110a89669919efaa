"""The build on a local Ray instance: valid shards; the workers report to the flow's one Prefect server."""

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.flows.procs import prefect_server_pids

from instvl.datasets.validate import validate_dataset
from instvl.deps import is_available
from instvl.flows.build_corpus import build_corpus
from instvl.testing.components import require_component


@pytest.fixture(autouse=True)
def _needs_ray() -> None:
    require_component("Ray", is_available("ray") and is_available("prefect_ray"), "pip install 'instvl[ray]'")


class ServerCounter:
    """Samples the Prefect servers started under this process while a build runs; keeps the maximum."""

    def __init__(self, interval_s: float = 0.25):
        self.interval, self.most = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.most = max(self.most, len(prefect_server_pids(ancestor=os.getpid())))

    def __enter__(self) -> "ServerCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """A short temp dir: Ray's socket paths must stay under the 107-character limit of Unix sockets."""
    path = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def worker_logs(temp_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in temp_dir.glob("session_*/logs/worker-*"))


def test_ray_build_uses_one_prefect_server(prefect_harness, synth_media, make_config, tmp_path, ray_temp_dir,
                                           monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    media = synth_media(num_samples=6, image_fraction=0.4)
    out = tmp_path / "corpus"
    cfg = make_config(media, out, "out.sources_per_unit=3", "flow.runner.kind=ray", "flow.runner.num_cpus=2",
                      f"flow.runner.temp_dir='{ray_temp_dir}'")
    with ServerCounter() as servers:
        summary = build_corpus(cfg)
    assert summary["failed"] == {} and summary["ran"] == 2
    assert validate_dataset(out).ok
    assert summary["manifest"]["num_rows"] >= 4
    assert servers.most == 1, f"{servers.most} Prefect servers ran: workers did not get PREFECT_API_URL"
    logs = worker_logs(ray_temp_dir)
    assert "annotating 3 files" in logs  # the units really ran in Ray workers
    assert "Starting temporary server" not in logs


def test_ray_runner_passes_the_server_and_logging_to_workers(monkeypatch):
    """Workers of an external cluster get the environment of `ray start`, not the driver's: the runner
    must hand them the flow's API URL and logging settings through the runtime env."""
    from instvl.flows.runners import RunnerConfig, build_task_runner

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("PREFECT_LOGGING_SETTINGS_PATH", "/srv/instvl-logging.yml")
    runner = build_task_runner(RunnerConfig(kind="ray", address="auto", num_cpus=2, temp_dir="/tmp/r"))
    env = runner.init_kwargs["runtime_env"]["env_vars"]
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_LOGGING_SETTINGS_PATH"] == "/srv/instvl-logging.yml"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert runner.address == "auto" and "num_cpus" not in runner.init_kwargs  # a cluster sizes itself
    assert runner.init_kwargs["_temp_dir"] == "/tmp/r"
