"""The streaming unit engine: many clips in flight, every model fed full batches, rows kept in order.

The serial path walks a unit one clip at a time (decode -> entities caption -> detect -> track ->
instance captions -> write), so on a GPU each model waits for the others and no batch fills. Here:

- decoding runs in `decode_workers` threads, each driving its own crash-isolated decode process
  (`media.worker`), up to `decode_ahead` clips ahead of the models;
- `clips_in_flight` clips are annotated at once, each by `pipeline.annotate_sample` in its own thread,
  with per-clip engines whose models are shared front-ends (`clip_engines`):
  - detector: a micro-batcher coalesces the `detect` calls of many clips into calls of up to
    `detect_batch` frames (waiting at most `linger_s` for a batch to fill). With `prefetch_keyframes`,
    a clip's keyframes (every `redetect_every`-th frame) are queued as soon as its phrases are known,
    so the trajectory builder's one-keyframe calls find their answer done. Frames of clips with other
    phrase lists share a call when the detector has `detect_many(frames, phrase_lists)` (per-image
    prompts); otherwise one call holds one phrase list;
  - tracker: `tracker_sessions` clips at once, oldest clip first (the builder sends every object of a
    window in one call);
  - captioner: a pool coalesces the requests of many clips into calls of up to `caption_batch`
    requests with `caption_calls` calls in flight (vLLM offline: one large `llm.chat`; openai:
    `concurrency` requests in flight across clips);
- the caller takes finished clips in input order; at most `clips_in_flight + decode_ahead` clips are
  between decode and write, so memory does not grow with the unit.

The rows are those of the serial path: every backend answers an item independently of what it is batched
with. The per-input fault boundary holds: a batched call that raises is retried item by item, so only
the clip whose item fails sees the error (and is quarantined by the caller).

`plan_memory` is the GPU memory plan: each model's stated share, vLLM's fraction from what remains, and
an error with the numbers when the models cannot fit.
"""

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from instvl.annotate.caption.base import Captioner, WrappedCaptioner
from instvl.annotate.caption.request import CaptionRequest
from instvl.annotate.config import AnnotateConfig, EngineConfig, MemoryPlanConfig
from instvl.annotate.detect.base import Detector
from instvl.annotate.pipeline import Engines
from instvl.annotate.track.base import Tracker
from instvl.annotate.tracks import Detection, TrackedFrame, TrackSeed
from instvl.media.fetch import Media, MediaError
from instvl.media.ingest import ClipSpec
from instvl.media.worker import DecodeWorker, use_worker

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_local = threading.local()
_tickets = itertools.count()


def _priority() -> int:
    """The clip sequence number of the calling thread: older clips are served first (0 outside clips)."""
    return getattr(_local, "seq", 0)


@dataclass
class StageStats:
    """What one shared stage did: calls, items, busy time (any call running) and items in flight."""

    name: str
    calls: int = 0
    items: int = 0
    max_batch: int = 0
    busy_s: float = 0.0
    in_flight_s: float = 0.0  # integral of items in flight over time
    first_s: float | None = None
    last_s: float | None = None
    _running: int = 0
    _items_running: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, items: int) -> None:
        with self._lock:
            now = time.perf_counter()
            self._advance(now)
            self.first_s = now if self.first_s is None else self.first_s
            self._running += 1
            self._items_running += items
            self.calls += 1
            self.items += items
            self.max_batch = max(self.max_batch, items)

    def end(self, items: int) -> None:
        with self._lock:
            now = time.perf_counter()
            self._advance(now)
            self._running -= 1
            self._items_running -= items
            self.last_s = now

    def _advance(self, now: float) -> None:
        if self._running:
            self.busy_s += now - self._since
            self.in_flight_s += self._items_running * (now - self._since)
        self._since = now

    def summary(self, wall_s: float) -> dict[str, float]:
        span = (self.last_s - self.first_s) if self.first_s is not None and self.last_s is not None else 0.0
        return {"calls": self.calls, "items": self.items,
                "mean_batch": self.items / self.calls if self.calls else 0.0, "max_batch": self.max_batch,
                "busy_s": self.busy_s,
                "busy_of_wall": self.busy_s / wall_s if wall_s else 0.0,
                "busy_of_phase": self.busy_s / span if span else 0.0,
                "in_flight": self.in_flight_s / self.busy_s if self.busy_s else 0.0}


@dataclass(order=True)
class _Item(Generic[T, R]):
    ticket: tuple[int, int]
    payload: T = field(compare=False)
    key: Hashable = field(compare=False)
    arrived: float = field(compare=False)
    future: "Future[R]" = field(compare=False)
    urgent: bool = field(default=True, compare=False)


class Batcher(Generic[T, R]):
    """Coalesces items submitted from many threads into calls of `run(items) -> results` of up to
    `max_batch` items, `calls` at once; items of the oldest clips go first; with `grouped`, one call holds
    items of one key only.

    An urgent item goes out within `linger_s` (from the oldest urgent item) unless its batch fills first.
    With `fill`, items submitted with `urgent=False` are held: they go out when `fill` of them wait, when
    the oldest waited `hold_s`, when `flush()` says no more will come soon (evaluated again on `poke()`),
    when the batcher closes, or with an urgent batch (they join it). Once held items go, every held item
    goes (a wave), in calls of up to `max_batch`. Without `fill` every item is urgent."""

    def __init__(self, name: str, run: Callable[[list[T]], Sequence[R]], max_batch: int, linger_s: float,
                 calls: int = 1, grouped: bool = False, fill: int = 0, hold_s: float = 0.0,
                 flush: Callable[[], bool] | None = None) -> None:
        self.name, self._run_fn, self.max_batch, self.linger_s = name, run, max(1, max_batch), linger_s
        self.grouped, self.fill, self.hold_s, self._flush = grouped, fill, hold_s, flush
        self.stats = StageStats(name)
        self.waves = 0  # releases of held items
        self._in_call: dict[Hashable, int] = {}  # items released and not answered, per key
        self._waiting: list[_Item[T, R]] = []
        self._wave = False  # held items are being released
        self._free = max(1, calls)
        self._cond = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(max(1, calls), thread_name_prefix=f"instvl-{name}")
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"instvl-{name}-batcher")
        self._thread.start()

    def submit(self, payload: T, key: Hashable = None, urgent: bool = True) -> "Future[R]":
        future: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: the batcher is closed")
            heapq.heappush(self._waiting, _Item((_priority(), next(_tickets)), payload, key,
                                                time.monotonic(), future, urgent or not self.fill))
            self._cond.notify_all()
        return future

    def map(self, payloads: Sequence[T], key: Hashable = None, urgent: bool = True) -> list[R]:
        futures = [self.submit(p, key, urgent) for p in payloads]
        return [f.result() for f in futures]

    def in_call(self, key: Hashable) -> int:
        """Items submitted with `key` that are in a call (released, not answered yet)."""
        return self._in_call.get(key, 0)

    def poke(self) -> None:
        """Something `flush()` reads has changed: look again."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _eligible(self) -> list[_Item[T, R]]:
        items = sorted(self._waiting, key=lambda item: (not item.urgent, item.ticket))
        if self.grouped:
            items = [item for item in items if item.key == items[0].key]
        return items[: self.max_batch]

    def _due(self) -> tuple[float, bool]:
        """(seconds until a batch should go, 0: now; whether the held items go as a wave)."""
        now = time.monotonic()
        urgent = [item.arrived for item in self._waiting if item.urgent]
        held = [item.arrived for item in self._waiting if not item.urgent]
        if held and (self._closed or self._wave or len(held) >= self.fill or
                     min(held) + self.hold_s <= now or (self._flush is not None and self._flush())):
            return 0.0, True
        if not urgent:
            return (min(held) + self.hold_s - now if held else float("inf")), False
        if self._closed or len(urgent) >= self.max_batch:
            return 0.0, False
        wait = min(urgent) + self.linger_s - now
        return max(0.0, min(wait, min(held) + self.hold_s - now) if held else wait), False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed and not self._waiting:
                        return  # closed and drained
                    wait, wave = self._due() if self._waiting and self._free else (float("inf"), False)
                    if wait <= 0:
                        break
                    self._cond.wait(None if wait == float("inf") else wait)
                batch = self._eligible()  # urgent items first; held ones fill the rest of the batch
                for item in batch:
                    self._in_call[item.key] = self._in_call.get(item.key, 0) + 1
                taken = {id(item) for item in batch}
                self._waiting = [item for item in self._waiting if id(item) not in taken]
                heapq.heapify(self._waiting)
                if wave and not self._wave:
                    self.waves += 1
                # a wave goes on until no held item is left
                self._wave = wave and any(not item.urgent for item in self._waiting)
                self._free -= 1
            self._pool.submit(self._run, batch)

    def _run(self, batch: list[_Item[T, R]]) -> None:
        try:
            self._call(batch)
        finally:
            with self._cond:
                self._free += 1
                for item in batch:
                    self._in_call[item.key] -= 1
                self._cond.notify_all()

    def _call(self, batch: list[_Item[T, R]]) -> None:
        self.stats.begin(len(batch))
        try:
            results = list(self._run_fn([item.payload for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except Exception as err:
            self.stats.end(len(batch))
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            # The fault boundary: find the item that fails, so that only its clip is quarantined.
            log.warning("%s: a batch of %d failed (%s: %s); retrying its items one by one", self.name,
                        len(batch), type(err).__name__, err)
            for item in batch:
                self._call([item])
            return
        except BaseException as err:
            self.stats.end(len(batch))
            for item in batch:
                item.future.set_exception(err)
            raise
        self.stats.end(len(batch))
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)


class _Gate:
    """At most `slots` holders at once; waiting threads enter oldest clip first."""

    def __init__(self, name: str, slots: int) -> None:
        self.stats = StageStats(name)
        self._free = slots
        self._waiting: list[tuple[int, int]] = []
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, items: int = 1) -> Iterator[None]:
        ticket = (_priority(), next(_tickets))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while not self._free or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()
        self.stats.begin(items)
        try:
            yield
        finally:
            self.stats.end(items)
            with self._cond:
                self._free += 1
                self._cond.notify_all()


class GatedTracker:
    """The shared tracker: `slots` clips' windows tracked at once, oldest clip first."""

    def __init__(self, inner: Tracker, gate: _Gate) -> None:
        self.inner, self.gate = inner, gate

    def track(self, frames: np.ndarray | Sequence[np.ndarray], seeds: Sequence[TrackSeed],
              *args: Any, **kwargs: Any) -> list[TrackedFrame]:
        with self.gate.hold(len(frames)):
            return self.inner.track(frames, seeds, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _address(frame: np.ndarray) -> int:
    return int(frame.__array_interface__["data"][0])


class ClipDetector:
    """One clip's view of the shared detector batcher: its keyframes are queued when its phrases are first
    asked for, and a `detect` call on a frame already queued waits for that answer instead."""

    def __init__(self, batcher: "Batcher[tuple[np.ndarray, tuple[str, ...]], list[Detection]]",
                 frames: np.ndarray, keyframes: Sequence[int], grouped: bool,
                 blocked: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self._batcher, self._frames, self._grouped, self._blocked = batcher, frames, grouped, blocked
        self._keyframes = list(keyframes)
        self._index = {_address(frames[k]): k for k in range(len(frames))}
        self._queued: dict[tuple[int, tuple[str, ...]], Future[list[Detection]]] = {}
        self._prefetched: set[tuple[str, ...]] = set()

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        key = tuple(phrases)
        if key not in self._prefetched:
            self._prefetched.add(key)
            for keyframe in self._keyframes:
                self._queued[(keyframe, key)] = self._submit(self._frames[keyframe], key)
        futures = []
        for frame in frames:
            k = self._index.get(_address(frame)) if isinstance(frame, np.ndarray) and \
                frame.shape == self._frames.shape[1:] else None
            queued = self._queued.pop((k, key), None) if k is not None else None
            futures.append(queued or self._submit(frame, key))
        with self._blocked():
            return [f.result() for f in futures]

    def _submit(self, frame: np.ndarray, key: tuple[str, ...]) -> "Future[list[Detection]]":
        # held: the detector waits for a full batch unless the tracker would starve (see StreamEngine)
        return self._batcher.submit((frame, key), key if self._grouped else None, urgent=False)


class PooledCaptioner(WrappedCaptioner):
    """The shared captioner: requests of many clips coalesced into large calls of the inner captioner.

    Instance captions end a clip and gate nothing, so they are held (the batcher's `fill`) and go out in
    waves; the engine's `flush` releases a wave early when the tracker runs low on clips. Entity and
    global captions gate detection and go out at once (held ones fill the rest of their call)."""

    def __init__(self, inner: Captioner, batcher: "Batcher[CaptionRequest, str]",
                 blocked: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        super().__init__(inner)
        self.batcher, self._blocked = batcher, blocked

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]:
        futures = [self.batcher.submit(r, key=r.kind, urgent=r.kind != "instance") for r in requests]
        with self._blocked():
            return [f.result() for f in futures]


@dataclass
class ClipJob:
    """One clip of a unit: its place in the unit (`seq`: rows are written in this order) and its media."""

    seq: int
    uri: str
    spec: ClipSpec
    media: Media


@dataclass
class _Failed:
    error: BaseException


_END = object()


def keyframes(num_frames: int, redetect_every: int) -> range:
    """The frames the trajectory builder detects on: every `redetect_every`-th, from the first."""
    return range(0, num_frames, max(1, redetect_every))


def _setting(obj: Any, name: str) -> Any:
    """A backend's config field (`obj.cfg.name`, `obj.config.name`), looking through wrappers (`inner`)."""
    for _ in range(4):
        for holder in (getattr(obj, "cfg", None), getattr(obj, "config", None)):
            if holder is not None and getattr(holder, name, None) is not None:
                return getattr(holder, name)
        obj = getattr(obj, "inner", None)
        if obj is None:
            return None
    return None


# Run in a new decode process so that the first clip does not pay for the imports.
_WARM_UP = """
import instvl.media.decode
try:
    import decord
except ImportError:
    pass
"""


class DecodePool:
    """`workers` crash-isolated decode processes (`media.worker`), each driven by a thread of its own.

    The processes start at once, in the background, so that their start-up (a fresh interpreter that
    imports the caller's `__main__` and the decoders) overlaps model loading and probing instead of
    delaying the first clip."""

    def __init__(self, workers: int) -> None:
        self.stats = StageStats("decode")
        self._workers = [DecodeWorker() for _ in range(max(1, workers))]
        self._idle: queue.SimpleQueue[DecodeWorker] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(len(self._workers), thread_name_prefix="instvl-decode")
        for worker in self._workers:
            self._pool.submit(self._start, worker)

    def _start(self, worker: DecodeWorker) -> None:
        try:
            worker.call(exec, _WARM_UP, uri="(decode worker start-up)")
        except MediaError as err:  # the first decode restarts it and reports its own error
            log.warning("a decode worker did not start: %s", err)
        finally:
            self._idle.put(worker)

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """`fn(*args)` in a decode thread, with that thread's `media.worker` set to a free process."""
        return self._pool.submit(self._run, fn, *args)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        worker = self._idle.get()
        self.stats.begin(1)
        try:
            with use_worker(worker):
                return fn(*args)
        finally:
            self.stats.end(1)
            self._idle.put(worker)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()


class StreamEngine:
    """The shared model front-ends of one unit and the bounded, ordered clip stream (see module doc)."""

    def __init__(self, engines: Engines, cfg: AnnotateConfig, decoders: DecodePool | None = None) -> None:
        self.engines, self.cfg = engines, cfg
        ec: EngineConfig = cfg.engine
        self.settings = ec
        self._lock = threading.Lock()
        self._active = 0  # clips decoded and being annotated
        self._waiting = {"detect": 0, "caption": 0}  # of those, clips waiting on a shared model
        detector = engines.detector
        self._mixed = callable(getattr(detector, "detect_many", None))
        detect_batch = ec.detect_batch or _setting(detector, "batch_size") or 8
        self.detector = Batcher("detect", self._detect_batch, detect_batch, ec.linger_s,
                                grouped=not self._mixed, fill=detect_batch, hold_s=ec.detect_hold_s,
                                flush=self._detector_needed)
        self.tracker = GatedTracker(engines.tracker, _Gate("track", ec.tracker_sessions))
        concurrency = _setting(engines.captioner, "concurrency")
        if concurrency:  # a server batches by itself: keep `concurrency` single requests in flight
            caption_batch, caption_calls = ec.caption_batch or 1, ec.caption_calls or concurrency
        else:  # an in-process engine: few large calls (vLLM schedules a call's requests itself)
            caption_batch = ec.caption_batch or _setting(engines.captioner, "batch_size") or 8
            caption_calls = ec.caption_calls or 1
        self.caption_pool = Batcher("caption", engines.captioner.caption, caption_batch, ec.linger_s,
                                    calls=caption_calls, fill=ec.caption_fill, hold_s=ec.caption_hold_s,
                                    flush=self._captions_needed)
        self.captioner = PooledCaptioner(engines.captioner, self.caption_pool, partial(self._wait, "caption"))
        self._own_decoders = decoders is None
        self.decoders = decoders or DecodePool(ec.decode_workers)
        self.decode_stats = self.decoders.stats
        self._clip_pool = ThreadPoolExecutor(ec.clips_in_flight, thread_name_prefix="instvl-clip")

    # -- when held work must go ---------------------------------------------------------------------
    def _ahead(self) -> int:
        """Clips the tracker has or will soon have: waiting on the detector or in the trajectory builder,
        plus those whose entity (or global) caption is in a captioner call."""
        pool = self.caption_pool
        return self._active - self._waiting["caption"] + pool.in_call("entities") + pool.in_call("global")

    def _captions_needed(self) -> bool:
        """Held captions go when the tracker runs low (`caption_low_water` clips ahead of it)."""
        return self._ahead() <= self.settings.caption_low_water

    def _detector_needed(self) -> bool:
        """Held keyframes go when at most `tracker_sessions` clips are in the builder (the tracker would
        starve waiting for a full detector batch)."""
        busy = self._active - self._waiting["caption"] - self._waiting["detect"]
        return busy <= self.settings.tracker_sessions

    def _changed(self) -> None:
        self.caption_pool.poke()
        self.detector.poke()

    @contextmanager
    def _wait(self, stage: str) -> Iterator[None]:
        with self._lock:
            self._waiting[stage] += 1
        self._changed()
        try:
            yield
        finally:
            with self._lock:
                self._waiting[stage] -= 1

    # -- models -------------------------------------------------------------------------------------
    def _detect_batch(self, items: list[tuple[np.ndarray, tuple[str, ...]]]) -> list[list[Detection]]:
        frames = [frame for frame, _ in items]
        if self._mixed:
            many = self.engines.detector.detect_many  # type: ignore[attr-defined]
            return many(frames, [list(p) for _, p in items])
        return self.engines.detector.detect(frames, list(items[0][1]))

    def clip_engines(self, frames: np.ndarray) -> Engines:
        """Engines for one clip: the shared front-ends and a trajectory builder of its own."""
        keys = keyframes(len(frames), self.cfg.trajectories.redetect_every) if \
            self.settings.prefetch_keyframes else []
        detector: Detector = ClipDetector(self.detector, frames, keys, grouped=not self._mixed,
                                          blocked=partial(self._wait, "detect"))
        tracker: Tracker = self.tracker
        return replace(self.engines, detector=detector, tracker=tracker, captioner=self.captioner,
                       builder=self.cfg.trajectories.build(detector, tracker))

    def stages(self) -> dict[str, StageStats]:
        return {"decode": self.decode_stats, "detect": self.detector.stats, "track": self.tracker.gate.stats,
                "caption": self.caption_pool.stats}

    # -- the clip stream ----------------------------------------------------------------------------
    def run(self, events: Iterable[Any], decode: Callable[[ClipJob], T],
            annotate: Callable[[ClipJob, "Future[T]"], R]) -> Iterator[tuple[Any, R | None]]:
        """(event, result) in the order of `events`: each `ClipJob` is decoded (`decode(job)`, in a decode
        thread with its own worker process) and annotated (`annotate(job, decoded_future)`, in a clip
        thread); other events pass through as (event, None). `events` is consumed in a feeder thread (so
        probing the next file overlaps the models); an exception it raises is raised here, in order."""
        ordered: queue.Queue[tuple[Any, Future[R] | None]] = queue.Queue()
        window = threading.Semaphore(self.settings.clips_in_flight + self.settings.decode_ahead)
        stop = threading.Event()

        def feed() -> None:
            try:
                for event in events:
                    if isinstance(event, ClipJob):
                        while not window.acquire(timeout=0.1):
                            if stop.is_set():
                                return
                        decoded = self.decoders.submit(decode, event)
                        result = self._clip_pool.submit(self._annotate, annotate, event, decoded)
                        ordered.put((event, result))
                    else:
                        ordered.put((event, None))
                    if stop.is_set():
                        return
            except BaseException as err:  # handed to the consumer, in order
                ordered.put((_Failed(err), None))
            finally:
                ordered.put((_END, None))

        feeder = threading.Thread(target=feed, daemon=True, name="instvl-feed")
        feeder.start()
        try:
            while True:
                event, result = ordered.get()
                if event is _END:
                    return
                if isinstance(event, _Failed):
                    raise event.error
                if result is None:
                    yield event, None
                    continue
                try:
                    value = result.result()
                finally:
                    window.release()
                yield event, value
        finally:
            stop.set()
            feeder.join()

    def _annotate(self, annotate: Callable[[ClipJob, "Future[T]"], R], job: ClipJob,
                  decoded: "Future[T]") -> R:
        _local.seq = job.seq
        wait([decoded])  # a clip waiting on its frames holds back no held batch
        with self._lock:
            self._active += 1
        try:
            return annotate(job, decoded)
        finally:
            _local.seq = 0
            with self._lock:
                self._active -= 1
            self._changed()

    def close(self) -> None:
        self._clip_pool.shutdown(wait=True, cancel_futures=True)
        if self._own_decoders:
            self.decoders.close()
        self.detector.close()
        self.caption_pool.close()

    def __enter__(self) -> "StreamEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the GPU memory plan ------------------------------------------------------------------------------
class MemoryPlanError(ValueError):
    """The models of a preset do not fit on the GPU; the message gives the numbers."""


@dataclass(frozen=True)
class MemoryBudget:
    """The resolved plan: GiB per model on a GPU of `gpu_gib`, and the fraction vLLM may take."""

    gpu_gib: float
    detector_gib: float
    tracker_gib: float
    reserve_gib: float
    captioner_gib: float
    vllm_fraction: float

    def describe(self) -> str:
        return (f"GPU {self.gpu_gib:.1f} GiB = detector {self.detector_gib:.1f} + tracker "
                f"{self.tracker_gib:.1f} + reserve {self.reserve_gib:.1f} + captioner "
                f"{self.captioner_gib:.1f} "
                f"(vLLM gpu_memory_utilization {self.vllm_fraction:.3f})")


def gpu_memory_gib(device: int = 0) -> float | None:
    """Total memory of CUDA device `device` in GiB, or None without torch or a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def plan_memory(plan: MemoryPlanConfig, captioner_in_process: bool) -> MemoryBudget | None:
    """Check that the models fit and set vLLM's share from what the detector, tracker and reserve leave.

    `captioner_in_process`: the captioner is a vLLM engine on this GPU (else it is a server elsewhere, or
    a node-local `vllm serve` that should be started with the fraction returned here). Returns None when
    the GPU size is unknown (no GPU and no `gpu_gib`); raises MemoryPlanError when the plan cannot fit.
    """
    gpu = plan.gpu_gib if plan.gpu_gib is not None else gpu_memory_gib(plan.device)
    if gpu is None:
        return None
    fixed = plan.detector.total_gib + plan.tracker.total_gib + plan.reserve_gib
    left = gpu - fixed
    need = plan.captioner.total_gib
    parts = (f"detector {plan.detector.total_gib:.1f} GiB (weights {plan.detector.weights_gib:.1f} + working "
             f"{plan.detector.working_gib:.1f}), tracker {plan.tracker.total_gib:.1f} GiB (weights "
             f"{plan.tracker.weights_gib:.1f} + working {plan.tracker.working_gib:.1f}), reserve "
             f"{plan.reserve_gib:.1f} GiB")
    if left <= 0 or need > left:
        raise MemoryPlanError(
            f"the models do not fit on a {gpu:.1f} GiB GPU: {parts} leave {left:.1f} GiB, and the captioner "
            f"needs {need:.1f} GiB (weights {plan.captioner.weights_gib:.1f} + least KV cache "
            f"{plan.captioner.working_gib:.1f}). Use a GPU with at least {fixed + need:.1f} GiB, a smaller "
            "preset, or a `vllm serve` on another GPU (captioner.kind=openai)")
    fraction = min(plan.max_fraction, left / gpu)
    if captioner_in_process and fraction * gpu < need:
        raise MemoryPlanError(f"max_fraction {plan.max_fraction} of a {gpu:.1f} GiB GPU is less than the "
                              f"captioner's {need:.1f} GiB")
    return MemoryBudget(gpu, plan.detector.total_gib, plan.tracker.total_gib, plan.reserve_gib,
                        fraction * gpu, round(fraction, 3))
