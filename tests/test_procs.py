"""A child started with `die_with_parent` is signalled when its parent is killed, even by SIGKILL."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    from instvl.procs import die_with_parent
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             preexec_fn=die_with_parent(os.getpid()))
    print(child.pid, flush=True)
    time.sleep(300)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its killed parent"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group, should the child have survived
            os.killpg(parent.pid, signal.SIGKILL)
