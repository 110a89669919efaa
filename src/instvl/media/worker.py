"""A crash-isolated decoder: a spawned child process that runs decode functions and can die safely.

decord can kill its process on a corrupt MP4 (SIGSEGV, or SIGABRT from std::bad_alloc), so it only
ever runs in a spawned child; a crash or a hang becomes a `MediaError` with the reason "decoder
crashed (signal 11, SIGSEGV)" or "decoder timed out", and the next call starts a fresh child.
"""

import atexit
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from instvl.media.fetch import MediaError


class DecodeWorker:
    """A spawned child process that runs decode functions; a crash or timeout kills and replaces it.

    Calls are serialised (one child, one request at a time). As with any spawned process, the parent's
    `__main__` module is re-imported in the child, so scripts need an `if __name__ == "__main__":` guard.
    """

    def __init__(self) -> None:
        self._process: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any, uri: str, timeout_s: float = 60.0) -> Any:
        """Run `fn(*args)` in the child (`fn` importable by name); raises MediaError (stage 'decode')."""
        with self._lock:
            self._send((fn, args))
            if not self._conn.poll(timeout_s):
                self.close(kill=True)
                raise MediaError(uri, f"decoder timed out after {timeout_s:g} s", stage="decode")
            try:
                status, payload = self._conn.recv()
            except (EOFError, ConnectionError):
                raise MediaError(uri, self._crash_reason(), stage="decode") from None
        if status == "error":
            raise MediaError(uri, payload, stage="decode")
        return payload

    def _send(self, request: tuple[Any, ...]) -> None:
        """Send to a live child, starting (or once restarting) it as needed."""
        if self._process is None or not self._process.is_alive():
            self._start()
        try:
            self._conn.send(request)
        except (BrokenPipeError, ConnectionError):  # the child died between two calls
            self.close(kill=True)
            self._start()
            self._conn.send(request)

    def _start(self) -> None:
        context = mp.get_context("spawn")  # never fork a process that may hold threads or a GIL-bound lib
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_conn,), daemon=True, name="instvl-decode")
        self._process.start()
        child_conn.close()

    def _crash_reason(self) -> str:
        self._process.join(5)
        code = self._process.exitcode
        self.close(kill=True)
        if code is not None and code < 0:
            return f"decoder crashed (signal {-code}, {signal.Signals(-code).name})"
        return f"decoder crashed (exit code {code})"

    def close(self, kill: bool = False) -> None:
        """Stop the child: politely, or with SIGKILL after a crash or timeout."""
        if self._process is None:
            return
        if not kill and self._process.is_alive():
            try:
                self._conn.send(None)
                self._process.join(5)
            except (OSError, ValueError):
                pass
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()
        self._process = self._conn = None


def _serve(conn: Any) -> None:
    """Child loop: answer (fn, args) requests until None arrives or the parent goes away."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        fn, args = request
        try:
            conn.send(("ok", fn(*args)))
        except Exception as err:  # a decode failure is an answer, not a reason to die
            conn.send(("error", _short_error(err)))


def _short_error(err: BaseException) -> str:
    """decord's messages carry C++ source paths and check expressions: keep the first line, bounded."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"


_worker: DecodeWorker | None = None
_thread = threading.local()


def default_worker() -> DecodeWorker:
    """This thread's decode worker (`use_worker`), else the process-wide one (started lazily, stopped at
    exit)."""
    global _worker
    own = getattr(_thread, "worker", None)
    if own is not None:
        return own
    if _worker is None:
        _worker = DecodeWorker()
        atexit.register(_worker.close)
    return _worker


@contextmanager
def use_worker(worker: DecodeWorker) -> Iterator[DecodeWorker]:
    """Decode through `worker` in this thread while the block runs: a pool of decode threads, each with
    its own child process, decodes in parallel (`annotate.engine`)."""
    previous = getattr(_thread, "worker", None)
    _thread.worker = worker
    try:
        yield worker
    finally:
        _thread.worker = previous
