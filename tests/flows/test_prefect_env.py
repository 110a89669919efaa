"""The embedded Prefect server: it dies with its driver, and a build with nothing to do never starts it."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from tests.flows.procs import prefect_server_pids

from instvl.annotate import run as annotate_run
from instvl.datasets import layout
from instvl.flows import build_corpus as build_module

DRIVER = textwrap.dedent("""
    from instvl.flows import prefect_env
    prefect_env.configure_environment()
    url = prefect_env.start_api_server()          # returns before the server answers
    assert prefect_env.ensure_api_server() == url
    assert prefect_env.server_alive()
    print(url, flush=True)
    import time; time.sleep(300)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_embedded_server_dies_with_its_driver_on_kill_9(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        url = driver.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"the driver exited ({driver.poll()})"
        (server,) = prefect_server_pids(ancestor=driver.pid)
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: no atexit hook or handler runs
        driver.wait()
        deadline = time.monotonic() + 15
        while server in prefect_server_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server not in prefect_server_pids(), "the embedded server outlived its killed driver"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group: a server that outlived the driver too
            os.killpg(driver.pid, signal.SIGKILL)


def test_a_rerun_with_nothing_to_do_starts_no_prefect(synth_media, make_config, tmp_path, monkeypatch,
                                                      capsys):
    media, out = synth_media(num_samples=2), tmp_path / "corpus"
    cfg = make_config(media, out)
    assert annotate_run.main(cfg) == 0  # every unit done, without Prefect
    (out / layout.MANIFEST).unlink()  # as after a build killed between its last unit and the manifest

    def no_prefect() -> str:
        raise AssertionError("a build with nothing to do must not start Prefect")

    monkeypatch.setattr(build_module, "start_api_server", no_prefect)
    monkeypatch.setattr(build_module, "ensure_api_server", no_prefect)
    capsys.readouterr()
    assert build_module.main(cfg) == 0
    assert "2 samples" in capsys.readouterr().out
    assert (out / layout.MANIFEST).is_file()
    summary = build_module.run_flow(cfg)
    assert summary["ran"] == 0 and summary["failed"] == {} and summary["flow_run_id"] is None


def test_the_server_is_started_ahead_only_when_units_are_likely_to_run(synth_media, make_config, tmp_path):
    media, out = synth_media(num_samples=2), tmp_path / "corpus"
    cfg = make_config(media, out)
    assert build_module._work_expected(cfg, out)  # no plan yet
    assert annotate_run.main(cfg) == 0
    assert not build_module._work_expected(cfg, out)  # a rerun: all planned units are done
    assert build_module._work_expected(make_config(media, out, "flow.retry_quarantined=true"), out)
    layout.stats_files(out)[0].unlink()
    assert build_module._work_expected(cfg, out)
