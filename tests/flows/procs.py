"""Process helpers of the flow tests: find Prefect servers and the members of a process group."""

from collections.abc import Callable
from pathlib import Path


def live_processes(match: Callable[[list[str], int], bool]) -> list[int]:
    """Pids of running (non-zombie) processes whose (argv, process group) satisfy `match`."""
    return [pid for pid, argv, _ppid, pgid in _processes() if match(argv, pgid)]


def _processes() -> list[tuple[int, list[str], int, int]]:
    """(pid, argv, parent pid, process group) of every running, non-zombie process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X"):
            found.append((int(entry.name), argv, int(fields[1]), int(fields[2])))
    return found


def prefect_server_pids(ancestor: int | None = None) -> list[int]:
    """Running Prefect API servers (uvicorn processes of prefect's app), optionally only the
    descendants of `ancestor` (the machine may run other people's servers)."""
    processes = _processes()
    servers = [pid for pid, argv, _ppid, _pgid in processes
               if any("prefect.server.api.server" in a for a in argv)]
    if ancestor is None:
        return servers
    parent = {pid: ppid for pid, _argv, ppid, _pgid in processes}
    return [pid for pid in servers if _descends(pid, ancestor, parent)]


def _descends(pid: int, ancestor: int, parent: dict[int, int]) -> bool:
    while pid in parent and pid not in (0, 1):
        pid = parent[pid]
        if pid == ancestor:
            return True
    return False


def group_members(pgid: int) -> list[int]:
    """Running processes of a process group (a killed build must leave none, its server included)."""
    return live_processes(lambda _argv, group: group == pgid)
