"""Decode frames of untrusted media safely: decord in a restartable worker process, PyAV as fallback.

decord can kill its process on a corrupt MP4 (SIGSEGV, or SIGABRT from std::bad_alloc), so it only
ever runs in a spawned child; a crash or a hang becomes a `DecodeError` with the reason "decoder
crashed (signal 11, SIGSEGV)" or "decoder timed out", and the next call starts a fresh child. decord
is only given file paths (bytes go through a temporary file): from a BytesIO it crashes far more often.
PyAV never crashed in fuzzing and runs in-process, with the default log level and slice threading
(setting a log level while frame threading is on deadlocks on corrupt input).
"""

import atexit
import logging
import multiprocessing as mp
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from instvl.datasets.probe import Media, MediaError, as_file
from instvl.deps import is_available, require
from instvl.log import warn_once

log = logging.getLogger(__name__)

DecoderName = Literal["auto", "decord", "pyav"]
_SEEK_AFTER_FRAMES = 48  # below this, decoding from the start is cheaper than a seek


class DecodeError(MediaError):
    """Frames could not be decoded; `reason` says why."""

    def __init__(self, uri: str, reason: str):
        super().__init__(uri, reason, stage="decode")


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
        """Run `fn(*args)` in the child (fn must be importable by name); raises DecodeError."""
        with self._lock:
            self._send((fn, args))
            if not self._conn.poll(timeout_s):
                self.close(kill=True)
                raise DecodeError(uri, f"decoder timed out after {timeout_s:g} s")
            try:
                status, payload = self._conn.recv()
            except (EOFError, ConnectionError):
                raise DecodeError(uri, self._crash_reason()) from None
        if status == "error":
            raise DecodeError(uri, payload)
        return payload

    def _send(self, request: tuple) -> None:
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


def default_worker() -> DecodeWorker:
    """The process-wide decode worker (started lazily, stopped at exit)."""
    global _worker
    if _worker is None:
        _worker = DecodeWorker()
        atexit.register(_worker.close)
    return _worker


def scaled_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) after shrinking so the short side is at most max_short_side (never enlarged)."""
    if not max_short_side or min(width, height) <= max_short_side:
        return width, height
    scale = max_short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_frame(frame: np.ndarray, max_short_side: int | None) -> np.ndarray:
    """One (H, W, 3) frame shrunk with area interpolation (the same for every decoder)."""
    size = scaled_size(frame.shape[1], frame.shape[0], max_short_side)
    if size == (frame.shape[1], frame.shape[0]):
        return frame
    cv2 = require("cv2", "video")
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def resize_short_side(frames: np.ndarray, max_short_side: int | None) -> np.ndarray:
    """(T, H, W, 3) frames shrunk so min(H, W) <= max_short_side."""
    if scaled_size(frames.shape[2], frames.shape[1], max_short_side) == (frames.shape[2], frames.shape[1]):
        return frames
    return np.stack([resize_frame(f, max_short_side) for f in frames])


def decord_batch(path: str, indices: list[int], max_short_side: int | None) -> np.ndarray:
    """Frames at `indices` with decord (runs inside the worker process)."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    beyond = [i for i in indices if i >= len(reader)]
    if beyond:
        raise IndexError(f"truncated: frame {beyond[0]} requested, decord sees only {len(reader)} frames")
    try:
        frames = reader.get_batch(indices).asnumpy()
    except decord.DECORDError as err:
        if _PADDED_ROWS_ERROR not in str(err):
            raise
        frames = np.stack([unpad_rows(reader[i].asnumpy()) for i in indices])
    return resize_short_side(frames, max_short_side)


# decord 0.6 keeps FFmpeg's row padding (rows are 32-pixel aligned) and takes padded-row bytes / width as
# the channel count. When that division is exact but not 3 (widths 2-8, 12, 16, 24, 48, 72), a frame comes
# back as (H, W, 4..12) and `get_batch` fails copying it into its (N, H, W, 3) buffer with this check.
_PADDED_ROWS_ERROR = "DECORDArrayCopyFromTo"


def unpad_rows(frame: np.ndarray) -> np.ndarray:
    """An (H, W, C > 3) decord frame whose C counts row padding, as the (H, W, 3) RGB picture it holds."""
    height, width, channels = frame.shape
    if channels == 3:
        return frame
    return np.ascontiguousarray(frame.reshape(height, width * channels)[:, : width * 3]).reshape(height, width, 3)


def decord_frames(media: Media, uri: str, indices: Sequence[int], max_short_side: int | None = None,
                  timeout_s: float = 60.0, worker: DecodeWorker | None = None) -> np.ndarray:
    """decord in the worker process, fed a path (bytes are written to a temporary file first)."""
    worker = worker or default_worker()
    wanted = [int(i) for i in indices]
    if isinstance(media, str):
        return worker.call(decord_batch, media, wanted, max_short_side, uri=uri, timeout_s=timeout_s)
    suffix = os.path.splitext(uri)[1] or ".mp4"
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="instvl-decode-") as tmp:
        tmp.write(media)
        tmp.flush()
        return worker.call(decord_batch, tmp.name, wanted, max_short_side, uri=uri, timeout_s=timeout_s)


def iter_pyav_frames(media: Media, uri: str, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, Any]]:
    """(frame index, av.VideoFrame) from `first` up to `stop` (exclusive), seeking when it pays off."""
    import av

    errors = (av.FFmpegError, UnicodeDecodeError, OSError)
    try:
        container = av.open(as_file(media), metadata_errors="replace")
    except errors as err:
        raise DecodeError(uri, f"cannot open as a video: {err}") from err
    index = None
    try:
        with container:
            if not container.streams.video:
                raise DecodeError(uri, "not a video: no video stream")
            stream = container.streams.video[0]
            for index, frame in _indexed(container, stream, first):
                if stop is not None and index >= stop:
                    return
                if index >= first:
                    yield index, frame
    except errors as err:
        where = "before the first frame" if index is None else f"after frame {index}"
        raise DecodeError(uri, f"truncated: decoding stopped {where}: {err}") from err
    except ValueError as err:
        raise DecodeError(uri, f"cannot seek to frame {first}: {err}") from err


def _indexed(container: Any, stream: Any, first: int) -> Iterator[tuple[int, Any]]:
    """Frames with their presentation index: counted from 0, or derived from pts after a seek."""
    rate = stream.average_rate or stream.guessed_rate
    if first < _SEEK_AFTER_FRAMES or not rate or stream.time_base is None:
        yield from enumerate(container.decode(stream))
        return
    fps, origin = float(rate), stream.start_time or 0
    # seek lands on the keyframe at or before the target; one frame of margin absorbs rounding
    container.seek(origin + int((first - 1) / fps / stream.time_base), stream=stream)
    for frame in container.decode(stream):
        if frame.pts is None:
            raise ValueError("frames without timestamps cannot be seeked; decode from the start")
        yield round(float((frame.pts - origin) * stream.time_base) * fps), frame


def pyav_frames(media: Media, uri: str, indices: Sequence[int], max_short_side: int | None = None) -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB, decoded in-process."""
    wanted = sorted({int(i) for i in indices})
    found: dict[int, np.ndarray] = {}
    for index, frame in iter_pyav_frames(media, uri, wanted[0], wanted[-1] + 1):
        if index in wanted:
            found[index] = resize_frame(frame.to_ndarray(format="rgb24"), max_short_side)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise DecodeError(uri, f"truncated: frame {missing[0]} requested, the stream ends before it")
    return np.stack([found[int(i)] for i in indices])


def decode_frames(media: Media, uri: str, indices: Sequence[int], decoder: DecoderName = "auto",
                  max_short_side: int | None = None, timeout_s: float = 60.0) -> tuple[np.ndarray, str]:
    """Frames at `indices` and the name of the decoder that produced them; raises DecodeError."""
    if not len(indices):
        raise ValueError(f"{uri}: no frame indices to decode")
    if decoder == "pyav" or (decoder == "auto" and not is_available("decord")):
        if decoder == "auto":
            warn_once(log, "decord is not installed: decoding with PyAV")
        return pyav_frames(media, uri, indices, max_short_side), "pyav"
    if decoder == "decord":
        require("decord", "video")
        return decord_frames(media, uri, indices, max_short_side, timeout_s), "decord"
    try:
        return decord_frames(media, uri, indices, max_short_side, timeout_s), "decord"
    except DecodeError as decord_err:
        log.warning("decord failed on %s (%s); retrying with PyAV", uri, decord_err.reason)
        try:
            return pyav_frames(media, uri, indices, max_short_side), "pyav"
        except DecodeError as err:
            raise DecodeError(uri, f"{err.reason} (decord: {decord_err.reason})") from err


def load_image(media: Media, uri: str) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB, EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(as_file(media)) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DecodeError(uri, f"not a readable image: {err}") from err
