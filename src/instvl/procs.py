"""Child servers we start (Label Studio, the Prefect server): they cannot outlive the process that
started them, and a port they need can be checked and its holder named.

Python runs no code on SIGKILL, so atexit hooks and signal handlers cannot stop a child server then;
the kernel can: Linux delivers a chosen signal to a child whose parent dies (prctl PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's choice), on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port (what a server checks before binding)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(2.0)
        return sock.connect_ex((host, port)) == 0


def listening_pids(port: int) -> set[int] | None:
    """PIDs of the processes holding a listening TCP socket on `port`, from /proc (Linux).

    None where /proc is missing; empty when the listener is not readable (another user's process).
    """
    tables = [Path(t) for t in ("/proc/net/tcp", "/proc/net/tcp6") if Path(t).is_file()]
    if not tables:
        return None
    sockets = set()
    for table in tables:
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not sockets:
        return pids
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone, or not ours to read
            if any(os.readlink(fd.path) in sockets for fd in os.scandir(f"/proc/{entry.name}/fd")):
                pids.add(int(entry.name))
    return pids


def describe_process(pid: int) -> str:
    """'pid N (command line)' as far as /proc tells."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return f"pid {pid} ({command.strip()[:200]})" if command.strip() else f"pid {pid}"


def describe_listener(port: int) -> str:
    pids = listening_pids(port)
    if pids is None:
        return "a process (no /proc to name it)"
    if not pids:
        return "a process this user cannot identify"
    return ", ".join(describe_process(pid) for pid in sorted(pids))
