"""Child processes that cannot outlive the process that started them (Label Studio, the Prefect server).

Python runs no code on SIGKILL, so atexit hooks and signal handlers cannot stop a child server then;
the kernel can: Linux delivers a chosen signal to a child whose parent dies (prctl PR_SET_PDEATHSIG).
"""

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGTERM the child when `parent` (the starting thread) dies.

    The signal follows the *thread* that forked the child: start such children from a thread that lives
    as long as the process (the main thread). None off Linux, where nothing equivalent exists.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
