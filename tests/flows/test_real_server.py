"""`instvl build` against a real `prefect server start` (what a team runs for its UI), not the embedded."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from instvl.datasets.validate import validate_dataset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(url: str, path: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prefect_server(tmp_path: Path):
    """A real Prefect server on a free port with its own SQLite home; stopped by process group."""
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(600):
            try:
                if api(url, "/health") is True:
                    break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail(f"prefect server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_build_reports_to_a_real_prefect_server(prefect_server, synth_media, tmp_path):
    url, env = prefect_server
    media = synth_media(num_samples=3)
    out = tmp_path / "corpus"
    env = dict(env, PREFECT_API_URL=url)
    result = subprocess.run([sys.executable, "-m", "instvl", "build", str(media), str(out), "--config",
                             "annotate/fake", "--set", "out.sources_per_unit=2"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert validate_dataset(out).ok
    runs = api(url, "/flow_runs/filter", {"limit": 10})
    assert [r["state_type"] for r in runs if r["name"]] == ["COMPLETED"]
    for _ in range(40):  # task runs arrive through events, asynchronously
        tasks = api(url, "/task_runs/filter", {"limit": 50})
        if len(tasks) == 2 and all(t["state_type"] == "COMPLETED" for t in tasks):
            break
        time.sleep(0.5)
    assert sorted(t["name"] for t in tasks) == ["unit unit-00000", "unit unit-00001"]
    assert "Starting temporary server" not in result.stderr  # the build used the real server
