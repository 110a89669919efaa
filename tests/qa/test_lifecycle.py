"""Lifecycle of `instvl qa serve` and the checks every push makes, against the real server.

The server dies with `instvl qa serve` (SIGTERM, SIGINT, even SIGKILL of the parent); a serve refuses a
port or data dir held by a server it did not start; a push authenticates first; a dataset root inside
the review-media root is refused.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from instvl.procs import free_port, port_in_use
from instvl.qa.confinement import check_dataset_root
from instvl.qa.server import (
    OWNER_FILE,
    Credentials,
    LabelStudioServer,
    ServerConflict,
    Stopped,
    stop_on_signals,
)
from instvl.qa.settings import ServeStepConfig
from instvl.testing.labelstudio import TEST_PASSWORD, TEST_TOKEN, TEST_USER, TOKEN_ENV

CLI = [sys.executable, "-c", "import sys; from instvl.cli import main; sys.exit(main())"]
UP = "Label Studio is up at"


def gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def serve_args(ls_server: LabelStudioServer, data_dir: Path, port: int) -> list[str]:
    settings = {"serve.port": port, "serve.data_dir": data_dir, "serve.start_timeout_s": 300,
                "serve.label_studio_bin": ls_server.executable,
                "serve.template_cache": ls_server.options.template_cache}
    return ["qa", "serve", *(arg for key, value in settings.items() for arg in ("--set", f"{key}={value}"))]


def admin_env() -> dict[str, str]:
    """The test admin, so the session's template data dir is reused (seconds, not migrations)."""
    return {**os.environ, "LABEL_STUDIO_USERNAME": TEST_USER, "LABEL_STUDIO_PASSWORD": TEST_PASSWORD,
            "LABEL_STUDIO_API_KEY": TEST_TOKEN}


@contextmanager
def serving(ls_server: LabelStudioServer, data_dir: Path
            ) -> Iterator[tuple[subprocess.Popen, int, list[str]]]:
    """`instvl qa serve` as a separate process, once it reports "up": (process, server pid, output lines).

    Whatever survives the test is killed by PID afterwards (the serve process, then its server)."""
    port = free_port()
    serve = subprocess.Popen([*CLI, *serve_args(ls_server, data_dir, port)], env=admin_env(), text=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        for line in serve.stdout:
            lines.append(line)
            if UP in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    server_pid = None
    try:
        assert wait_for(lambda: up.is_set() or serve.poll() is not None, 360) and up.is_set(), "".join(lines)
        owner = json.loads((data_dir / OWNER_FILE).read_text())
        server_pid = owner["pid"]
        assert owner["serve_pid"] == serve.pid and f"pid {server_pid}" in "".join(lines)
        assert port_in_use("127.0.0.1", port) and not gone(server_pid)
        yield serve, server_pid, lines
    finally:
        for pid in (serve.pid, server_pid):
            if pid is not None and not gone(pid):
                os.kill(pid, signal.SIGKILL)
        serve.wait(timeout=30)


def port_of(lines: list[str]) -> int:
    return int(next(line for line in lines if UP in line).split(UP)[1].split()[0].rsplit(":", 1)[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_serve_stops_its_server(ls_server, tmp_path, sig):
    with serving(ls_server, tmp_path / "ls" / "data") as (serve, server_pid, lines):
        os.kill(serve.pid, sig)  # to the instvl process only, not its group
        assert serve.wait(timeout=60) == 0
        assert wait_for(lambda: gone(server_pid), 15), f"Label Studio pid {server_pid} outlived serve"
        assert not port_in_use("127.0.0.1", port_of(lines))
        assert f"stopped Label Studio ({sig.name})" in "".join(lines)
        assert not (tmp_path / "ls" / "data" / OWNER_FILE).exists()


def test_sigkill_of_serve_takes_its_server_down_too(ls_server, tmp_path):
    with serving(ls_server, tmp_path / "ls" / "data") as (serve, server_pid, lines):
        os.kill(serve.pid, signal.SIGKILL)  # no handler runs: the parent-death signal must do it
        serve.wait(timeout=30)
        assert wait_for(lambda: gone(server_pid), 20), f"Label Studio pid {server_pid} was orphaned"
        assert wait_for(lambda: not port_in_use("127.0.0.1", port_of(lines)), 5)


def test_serve_refuses_a_port_held_by_a_server_it_did_not_start(ls_server, tmp_path, monkeypatch, capsys):
    from instvl.cli import main as cli

    for name, value in admin_env().items():
        monkeypatch.setenv(name, value)
    data_dir = tmp_path / "ls" / "data"
    assert cli(serve_args(ls_server, data_dir, ls_server.port)) == 1
    err = capsys.readouterr().err
    assert f"port {ls_server.port} on 127.0.0.1 is already in use by pid {ls_server.process.pid}" in err
    assert "did not start" in err and UP not in err
    assert not data_dir.exists()  # refused before preparing anything
    # The same data dir as a running server (on any port): refused, naming that server.
    assert cli(serve_args(ls_server, ls_server.data_dir, 0)) == 1
    err = capsys.readouterr().err
    assert f"Label Studio pid {ls_server.process.pid}" in err and str(ls_server.data_dir) in err
    assert ls_server.process.poll() is None and ls_server.owns_port()


def test_a_foreign_listener_is_named_and_never_taken_for_ours(tmp_path):
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\nexit 1\n")
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        options = ServeStepConfig(label_studio_bin=str(fake), data_dir=str(tmp_path / "data"),
                               template_cache=None)
        server = LabelStudioServer(options, Credentials("a@b.c", "pw-123456", "token-123456"),
                                   tmp_path / "media", port=port)
        held = f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} "
        with pytest.raises(ServerConflict, match=held):
            server.start()
        server.nonce = "not-the-listeners"
        assert not server.owns_port()
    assert not (tmp_path / "data").exists()


def test_stop_signals_raise_once_and_respect_an_ignored_hangup():
    term = signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with pytest.raises(Stopped), stop_on_signals() as received:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            assert received == []
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert received == ["SIGTERM"]
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_every_push_checks_the_token(make_synth, qa_settings, monkeypatch, capsys):
    from instvl.cli import main as cli

    root = make_synth(num_samples=2, seed=8)
    server = qa_settings()["server"]
    sets = [arg for key, value in server.items() for arg in ("--set", f"server.{key}={value}")]
    assert cli(["qa", "push", str(root), *sets, "--set", "push.select=all"]) == 0
    assert "pushed 2" in capsys.readouterr().out
    assert cli(["qa", "push", str(root), *sets]) == 0  # the right token, nothing new: fine
    for wrong in ("wrong-token-0123456789", "eyJhbGciOiJIUzI1NiJ9.eyJ0eXBlIjoicmVmcmVzaCJ9.c2ln"):
        monkeypatch.setenv(TOKEN_ENV, wrong)
        for select in ("all", "routed"):  # everything already there / nothing selected
            assert cli(["qa", "push", str(root), *sets, "--set", f"push.select={select}"]) == 1
            captured = capsys.readouterr()
            assert f"instvl qa push: the token in ${TOKEN_ENV} was refused" in captured.err
            assert "HTTP 401" in captured.err and wrong not in captured.err + captured.out


def test_push_refuses_a_dataset_inside_the_review_media_root(tmp_path, capsys):
    from instvl.qa.push import PushConfig, main

    media = tmp_path / "review-media"
    inside = media / "corpus"
    (inside / "shards").mkdir(parents=True)
    cfg = PushConfig(root=str(inside), serve={"data_dir": str(tmp_path / "ls"), "template_cache": None},
                     server={"document_root": str(media), "token_env": "INSTVL_NO_SUCH_TOKEN"})
    assert main(cfg) == 1  # before any server or token is needed
    err = capsys.readouterr().err
    assert f"the dataset root {inside} lies inside the review-media root {media}" in err
    assert not [p for p in media.iterdir() if p != inside]  # nothing staged
    (tmp_path / "link").symlink_to(inside, target_is_directory=True)
    with pytest.raises(ValueError, match=f"resolves to {inside}"):
        check_dataset_root(tmp_path / "link", media)
    with pytest.raises(ValueError, match="lies inside"):
        check_dataset_root(media, media)
    assert check_dataset_root(tmp_path / "elsewhere", media) == tmp_path / "elsewhere"
