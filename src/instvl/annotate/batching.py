"""Scheduling primitives of the stream engine: a micro-batcher that coalesces calls from many clip threads
into full model calls, a gate that lets a few clips use a model at once, their busy statistics, and the
loop thread the batcher (and the engines that schedule by themselves) is built on.

Both serve the oldest clip first: a thread's priority is the sequence number of the clip it works on
(`set_priority`), so a unit's clips finish in about the order the writer needs them.
"""

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_local = threading.local()
_tickets = itertools.count()


def set_priority(seq: int) -> None:
    """Make the calling thread serve clip `seq`: its batched items and gate entries go before younger
    clips' (0: no clip)."""
    _local.seq = seq


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


class LoopThread:
    """One daemon thread running `_loop`, woken through `_cond`. A subclass sets up its state after
    `LoopThread.__init__`, then calls `_start()`; its loop returns once it sees `_closed`. `close()` sets
    `_closed`, wakes the loop and waits for it to return."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    def _start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


@dataclass(order=True)
class _Item(Generic[T, R]):
    ticket: tuple[int, int]
    payload: T = field(compare=False)
    key: Hashable = field(compare=False)
    arrived: float = field(compare=False)
    future: "Future[R]" = field(compare=False)
    urgent: bool = field(default=True, compare=False)


class Batcher(LoopThread, Generic[T, R]):
    """Coalesces items submitted from many threads into calls of `run(items) -> results` of up to
    `max_batch` items, `calls` at once; items of the oldest clips go first; with `grouped`, one call holds
    items of one key only.

    An urgent item goes out within `linger_s` (from the oldest urgent item) unless its batch fills first.
    With `fill`, items submitted with `urgent=False` are held: they go out when they and the items in calls
    reach `fill` (a model that schedules by itself, vLLM, is then kept at `fill` sequences or more), when
    the oldest waited `hold_s` (unless `keep()` says the model's consumers have work enough: then they
    wait on for `fill`), `linger_s` after `flush()` says they should go (both evaluated again on
    `poke()`), when the batcher closes, or with an urgent batch (they join it). Once held items go, every
    held item goes (a wave), in calls of up to `max_batch`. Without `fill` every item is urgent."""

    def __init__(self, name: str, run: Callable[[list[T]], Sequence[R]], max_batch: int, linger_s: float,
                 calls: int = 1, grouped: bool = False, fill: int = 0, hold_s: float = 0.0,
                 flush: Callable[[], bool] | None = None, keep: Callable[[], bool] | None = None) -> None:
        super().__init__(f"instvl-{name}-batcher")
        self.name, self._run_fn, self.max_batch, self.linger_s = name, run, max(1, max_batch), linger_s
        self.grouped, self.fill, self.hold_s, self._flush, self._keep = grouped, fill, hold_s, flush, keep
        self.stats = StageStats(name)
        self.waves = 0  # releases of held items
        self._in_call: dict[Hashable, int] = {}  # items released and not answered, per key
        self._waiting: list[_Item[T, R]] = []
        self._wave = False  # held items are being released
        self._free = max(1, calls)
        self._pool = ThreadPoolExecutor(max(1, calls), thread_name_prefix=f"instvl-{name}")
        self._start()

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

    def in_call(self, *keys: Hashable) -> int:
        """Items submitted with any of `keys` that are in a call (released, not answered yet)."""
        return sum(self._in_call.get(key, 0) for key in keys)

    def held(self, *keys: Hashable) -> int:
        """Items submitted with any of `keys` that are held (waiting, not urgent)."""
        with self._cond:
            return sum(1 for item in self._waiting if not item.urgent and item.key in keys)

    def poke(self) -> None:
        """Something `flush()` reads has changed: look again."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        super().close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _eligible(self) -> list[_Item[T, R]]:
        items = sorted(self._waiting, key=lambda item: (not item.urgent, item.ticket))
        if self.grouped:
            items = [item for item in items if item.key == items[0].key]
        return items[: self.max_batch]

    def _held_due(self, held: list[float], now: float) -> float:
        """Seconds until the held items go (0: now). When `flush()` says so, they still wait `linger_s`
        from the last one submitted, so that items submitted together (one clip's keyframes, the clips
        finished by one model call) go together."""
        if self._closed or self._wave or len(held) + sum(self._in_call.values()) >= self.fill:
            return 0.0
        due = float("inf") if self._keep is not None and self._keep() else min(held) + self.hold_s - now
        if self._flush is not None and self._flush():
            due = min(due, max(held) + self.linger_s - now)
        return max(0.0, due)

    def _due(self) -> tuple[float, bool]:
        """(seconds until a batch should go, 0: now; whether the held items go as a wave)."""
        now = time.monotonic()
        urgent = [item.arrived for item in self._waiting if item.urgent]
        held = [item.arrived for item in self._waiting if not item.urgent]
        held_due = self._held_due(held, now) if held else float("inf")
        if held_due <= 0:
            return 0.0, True
        if not urgent:
            return held_due, False
        if self._closed or len(urgent) >= self.max_batch:
            return 0.0, False
        return max(0.0, min(min(urgent) + self.linger_s - now, held_due)), False

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


class Gate:
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
