"""The crash-isolated decode worker: crashes and hangs become reasons; the next call gets a fresh child."""

import ctypes
import time

import pytest

from instvl.media.fetch import MediaError
from instvl.media.worker import DecodeWorker


@pytest.fixture
def worker():
    owned = DecodeWorker()
    yield owned
    owned.close()


def test_worker_turns_a_crash_into_a_reason_and_recovers(worker):
    with pytest.raises(MediaError, match=r"decoder crashed \(signal 11, SIGSEGV\)") as caught:
        worker.call(ctypes.string_at, 0, uri="crash.mp4")  # reads address 0: a real segfault in the child
    assert caught.value.uri == "crash.mp4" and caught.value.stage == "decode"
    assert worker.call(sum, [1, 2, 3], uri="after-crash") == 6


def test_worker_kills_a_hung_call(worker):
    with pytest.raises(MediaError, match="timed out after 0.5 s"):
        worker.call(time.sleep, 30, uri="hang.mp4", timeout_s=0.5)
    assert worker.call(max, [4, 9], uri="after-hang") == 9


def test_worker_reports_exceptions_without_dying(worker):
    with pytest.raises(MediaError, match="ZeroDivisionError"):
        worker.call(divmod, 1, 0, uri="x")
    pid = worker._process.pid
    assert worker.call(divmod, 7, 2, uri="x") == (3, 1)
    assert worker._process.pid == pid
