"""The streaming unit engine: many clips in flight, every model fed full batches, rows kept in order.

The serial path walks a unit one clip at a time (decode -> entities caption -> detect -> track ->
instance captions -> write), so on a GPU each model waits for the others and no batch fills. Here:

- decoding runs in `decode_workers` threads, each driving its own crash-isolated decode process
  (`media.worker`), up to `decode_ahead` clips ahead of the models;
- `clips_in_flight` clips are annotated at once, each by `pipeline.annotate_sample` in its own thread,
  with per-clip engines whose models are shared front-ends (`clip_engines`):
  - detector: a micro-batcher coalesces the `detect` calls of many clips into calls of up to
    `detect_batch` frames; while more keyframes are coming (a clip decoding with a free slot, or a
    clip whose phrases are not known yet) a batch waits to fill, at most `detect_hold_s` unless more
    than `detect_low_water` clips are ready for the tracker. With
    `prefetch_keyframes`, a clip's keyframes (every `redetect_every`-th frame) are queued as soon as
    its phrases are known, so the trajectory builder's one-keyframe calls find their answer done.
    Frames of clips with other phrase lists share a call when the detector has
    `detect_many(frames, phrase_lists)` (per-image prompts); otherwise one call holds one phrase list;
  - tracker: `tracker_sessions` clips at once, oldest clip first (the builder sends every object of a
    window in one call);
  - captioner: a pool coalesces the requests of many clips into calls of up to `caption_batch`
    requests with `caption_calls` calls in flight (vLLM in calls: one large `llm.chat` at a time; a
    captioner with `concurrency`, openai or vLLM fed continuously: that many single requests in flight
    across clips, the engine refilling its batch as sequences finish); entity captions go at once (they
    gate detection), instance captions are held until they and the requests in calls reach
    `caption_fill`, so that a self-scheduling engine is refilled to that many sequences rather than run
    small batches (entity captions too with `caption_hold_entities`, while the tracker has work: for one
    GPU shared by all, where with `caption_waves` held captions go in waves that start and end together,
    see `_captions_needed`);
- the caller takes finished clips in input order; at most `clips_in_flight + decode_ahead` clips are
  between decode and write, so memory does not grow with the unit.

The rows are those of the serial path: every backend answers an item independently of what it is batched
with. The per-input fault boundary holds: a batched call that raises is retried item by item, so only
the clip whose item fails sees the error (and is quarantined by the caller).

The batcher and the gate are in `annotate.batching`; the GPU memory plan in `annotate.memory`.
"""

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import numpy as np

from instvl.annotate.batching import Batcher, Gate, StageStats, set_priority
from instvl.annotate.caption.base import Captioner, WrappedCaptioner
from instvl.annotate.caption.request import CaptionRequest
from instvl.annotate.config import AnnotateConfig, EngineConfig
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


class GatedTracker:
    """The shared tracker: `slots` clips' windows tracked at once, oldest clip first."""

    def __init__(self, inner: Tracker, gate: Gate) -> None:
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
                 blocked: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 queued: Callable[[], None] = lambda: None) -> None:
        self._batcher, self._frames, self._grouped, self._blocked = batcher, frames, grouped, blocked
        self._on_queued = queued
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
            self._on_queued()
        futures = []
        for frame in frames:
            k = self._index.get(_address(frame)) if isinstance(frame, np.ndarray) and \
                frame.shape == self._frames.shape[1:] else None
            queued = self._queued.pop((k, key), None) if k is not None else None
            futures.append(queued or self._submit(frame, key))
        with self._blocked():
            return [f.result() for f in futures]

    def _submit(self, frame: np.ndarray, key: tuple[str, ...]) -> "Future[list[Detection]]":
        # held: the detector waits for a full batch while more keyframes are coming (see StreamEngine)
        return self._batcher.submit((frame, key), key if self._grouped else None, urgent=False)


class PooledCaptioner(WrappedCaptioner):
    """The shared captioner: requests of many clips coalesced into large calls of the inner captioner.

    Instance captions end a clip and gate nothing, so they are held (the batcher's `fill`) and go out in
    waves; the engine's `flush` releases a wave early when the tracker runs low on clips. Entity and
    global captions gate detection and go out at once (held ones fill the rest of their call), unless
    `hold(kind)` says they may wait too."""

    def __init__(self, inner: Captioner, batcher: "Batcher[CaptionRequest, str]",
                 blocked: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 hold: Callable[[str], bool] = lambda kind: kind == "instance") -> None:
        super().__init__(inner)
        self.batcher, self._blocked, self._hold = batcher, blocked, hold

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]:
        futures = [self.batcher.submit(r, key=r.kind, urgent=not self._hold(r.kind)) for r in requests]
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
_clip = threading.local()  # per clip thread: whether its keyframes are still to be queued


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
        self._unstarted = 0  # clips handed to the engine and not yet active (decoding, or queued)
        self._undetected = 0  # active clips that have not queued their keyframes yet
        self._waiting = {"detect": 0, "caption": 0}  # of those, clips waiting on a shared model
        self._handed = 0  # clips handed to the engine and not yet taken by the caller
        self._all_in = False  # every clip of the run has been handed to the engine
        detector = engines.detector
        self._mixed = callable(getattr(detector, "detect_many", None))
        detect_batch = ec.detect_batch or _setting(detector, "batch_size") or 8
        self.detector = Batcher("detect", self._detect_batch, detect_batch, ec.linger_s,
                                grouped=not self._mixed, fill=detect_batch, hold_s=ec.detect_hold_s,
                                flush=self._detector_needed, keep=self._tracker_fed)
        self.tracker = GatedTracker(engines.tracker, Gate("track", ec.tracker_sessions))
        concurrency = _setting(engines.captioner, "concurrency")
        if concurrency:  # the engine batches by itself: keep `concurrency` single requests in flight
            caption_batch, caption_calls = ec.caption_batch or 1, ec.caption_calls or concurrency
        else:  # an in-process engine: few large calls (vLLM schedules a call's requests itself)
            caption_batch = ec.caption_batch or _setting(engines.captioner, "batch_size") or 8
            caption_calls = ec.caption_calls or 1
        self.caption_pool = Batcher("caption", engines.captioner.caption, caption_batch, ec.linger_s,
                                    calls=caption_calls, fill=ec.caption_fill, hold_s=ec.caption_hold_s,
                                    flush=self._captions_needed)
        self.captioner = PooledCaptioner(engines.captioner, self.caption_pool, partial(self._wait, "caption"),
                                         hold=self._caption_may_wait)
        self._own_decoders = decoders is None
        self.decoders = decoders or DecodePool(ec.decode_workers)
        self.decode_stats = self.decoders.stats
        self._clip_pool = ThreadPoolExecutor(ec.clips_in_flight, thread_name_prefix="instvl-clip")

    # -- when held work must go ---------------------------------------------------------------------
    def _ahead(self) -> int:
        """Clips the tracker has or will soon have: waiting on the detector or in the trajectory builder,
        plus those whose entity (or global) caption is in a captioner call."""
        pool = self.caption_pool
        return self._active - self._waiting["caption"] + pool.in_call("entities", "global")

    def _captions_needed(self) -> bool:
        """Held captions go when the tracker runs low (`caption_low_water` clips ahead of it).

        With `caption_waves` (one GPU for all) the captioner runs waves that start together and end
        together: held captions go only when the captioner is idle (requests joining a wave's tail would
        run on, a few sequences per step, while the tracker waits for the GPU), not while clips are
        starting or the clip slots are filling at the start of the run (their entity captions are on
        their way: they join this wave), and once no clip is left to enter only when nothing is ahead
        of the tracker (the last clips' captions then run as one wave after it). The GPU is busy all
        the while; the same work takes fewer, fuller steps."""
        if not self.settings.caption_waves:
            return self._ahead() <= self.settings.caption_low_water
        pool = self.caption_pool
        filling = not self._all_in and self._handed < self.settings.clips_in_flight
        if pool.in_call("entities", "global", "instance") or self._starting() or filling:
            return False
        return self._ahead() <= (0 if self._all_in else self.settings.caption_low_water)

    def _starting(self) -> bool:
        """A clip is decoding or queued while a clip slot is free: it starts (and asks for its entity
        caption) without any held request going."""
        return self._unstarted > 0 and self._active < self.settings.clips_in_flight

    def _caption_may_wait(self, kind: str) -> bool:
        """Instance captions may be held; entity and global captions too with `caption_hold_entities`,
        while the tracker has more than `caption_low_water` clips ahead of it."""
        if kind == "instance":
            return True
        return self.settings.caption_hold_entities and not self._captions_needed()

    def _keyframes_coming(self) -> bool:
        """Whether more keyframes will be queued without any held one going: an active clip has not
        queued its keyframes yet (its phrases are on their way: not those whose entity caption is held,
        which may wait for the held keyframes to be tracked), or a clip is decoding or queued while a
        clip slot is free (with every slot taken, new clips wait for the held ones)."""
        if self._starting():
            return True
        held = self.caption_pool.held("entities", "global") if self.settings.caption_hold_entities else 0
        return self._undetected > held

    def _keyframes_queued(self) -> None:
        """The calling clip thread has queued its keyframes (or ended): it brings no more."""
        if getattr(_clip, "undetected", False):
            _clip.undetected = False
            with self._lock:
                self._undetected -= 1
            self._changed()

    def _detector_needed(self) -> bool:
        """Held keyframes go when no more are coming; until then they wait for a full detector batch (at
        most `detect_hold_s`), even while the tracker waits: more clips' phrases are on their way."""
        return not self._keyframes_coming()

    def _tracker_fed(self) -> bool:
        """Whether the tracker has work enough without the held keyframes: more than `detect_low_water`
        clips are being tracked or queued for it. Held keyframes then wait for a full detector batch past
        `detect_hold_s` (between units, or when many clips are ahead, a short hold would send half
        batches without the tracker gaining anything)."""
        return self._active - self._waiting["detect"] - self._waiting["caption"] > \
            self.settings.detect_low_water

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
                                          blocked=partial(self._wait, "detect"),
                                          queued=self._keyframes_queued)
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
        self._all_in, self._handed = False, 0

        def feed() -> None:
            try:
                for event in events:
                    if isinstance(event, ClipJob):
                        while not window.acquire(timeout=0.1):
                            if stop.is_set():
                                return
                        with self._lock:
                            self._unstarted += 1
                            self._handed += 1
                        self._changed()
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
                self._all_in = True
                self._changed()
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
                    with self._lock:
                        self._handed -= 1
                yield event, value
        finally:
            stop.set()
            feeder.join()

    def _annotate(self, annotate: Callable[[ClipJob, "Future[T]"], R], job: ClipJob,
                  decoded: "Future[T]") -> R:
        set_priority(job.seq)
        wait([decoded])  # a clip waiting on its frames holds back no held batch
        with self._lock:
            self._active += 1
            self._unstarted -= 1
            self._undetected += 1
        _clip.undetected = True
        try:
            return annotate(job, decoded)
        finally:
            self._keyframes_queued()
            set_priority(0)
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
