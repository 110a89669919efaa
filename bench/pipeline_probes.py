"""What `bench/pipeline.py` measures in a run: real seconds spent writing rows and decoding clips, the
peak RSS, and the busy shares and batches of the emulated GPU stages."""

import os
import threading
import time
from typing import Any


class Orchestration:
    """Real seconds spent writing rows (UnitWriter.write / quarantine), by patching the writer class."""

    def __init__(self) -> None:
        from instvl.datasets.writer import UnitWriter

        self.write_s = 0.0
        self._cls = UnitWriter
        self._saved = {name: getattr(UnitWriter, name) for name in ("write", "quarantine")}

    def __enter__(self) -> "Orchestration":
        for name, method in self._saved.items():
            def timed(writer: Any, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return _method(writer, *args, **kwargs)
                finally:
                    self.write_s += time.perf_counter() - started
            setattr(self._cls, name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, method in self._saved.items():
            setattr(self._cls, name, method)


class DecodeTimes:
    """The real seconds of every clip decode (`units._decode`, in the decode threads of either path): the
    CPU side of the benchmark, stated beside the modelled GPU time."""

    def __init__(self) -> None:
        from instvl.annotate import units

        self.spans: list[tuple[float, float]] = []
        self._units, self._saved = units, units._decode

    def __enter__(self) -> "DecodeTimes":
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return self._saved(*args, **kwargs)
            finally:
                self.spans.append((started, time.perf_counter()))
        self._units._decode = timed
        return self

    def __exit__(self, *exc: object) -> None:
        self._units._decode = self._saved

    def summary(self, run_start: float) -> dict[str, float]:
        if not self.spans:
            return {}
        first, last = min(s for s, _ in self.spans), max(e for _, e in self.spans)
        return {"clips": len(self.spans), "mean_s": sum(e - s for s, e in self.spans) / len(self.spans),
                "first_start_s": first - run_start, "last_end_s": last - run_start,
                "clips_per_s": len(self.spans) / (last - first) if last > first else 0.0}


class PeakRSS:
    """The peak resident memory of this process (MiB), sampled while the block runs."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak_mib, self._stop, self._interval = 0.0, threading.Event(), interval_s

    def _sample(self) -> None:
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
            self.peak_mib = max(self.peak_mib, pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stage_figures(stats: Any, run_start: float, run_end: float) -> dict[str, float]:
    """Busy share of the stage's phase (its first call's start to its last call's end) and of the run."""
    figures = stats.summary(run_end - run_start)
    span = (stats.last_s - stats.first_s) if stats.calls else 0.0
    figures.update(phase_s=span, busy_of_run=figures.pop("busy_of_wall"),
                   phase_start_s=(stats.first_s - run_start) if stats.calls else 0.0)
    return figures


def engine_figures(engines: list[Any], run_start: float, run_end: float) -> dict[str, float]:
    """The captioner's figures over its engines (one, or a data-parallel server's): the least busy
    engine's shares, and the running sequences per step (and by time) over all their steps."""
    per_engine = [stage_figures(engine.stats, run_start, run_end) for engine in engines]
    figures = min(per_engine, key=lambda f: f["busy_of_phase"])
    steps = sum(engine.steps for engine in engines)
    busy = sum(engine.stats.busy_s for engine in engines)
    figures.update(
        engines=len(engines), busy_of_phase_each=[f["busy_of_phase"] for f in per_engine],
        mean_batch=sum(engine.seq_steps for engine in engines) / steps if steps else 0.0,
        in_flight=sum(engine.waiting_steps for engine in engines) / steps if steps else 0.0,
        # what a sampled gauge of running requests (vLLM's num_requests_running) shows: weighted by time
        running_time_weighted=sum(engine.stats.in_flight_s for engine in engines) / busy if busy else 0.0)
    return figures
