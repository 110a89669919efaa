"""A progress bar for builds whose work happens in other threads or processes (Prefect, Ray).

Running units report through the progress files of `annotate.progress`, finished ones through their
stats files; a background thread sums both once a second into a tqdm bar with samples/s and ETA.
"""

import sys
import threading
from pathlib import Path
from types import TracebackType

from instvl.annotate.progress import read_progress, reset_progress
from instvl.datasets import layout
from instvl.datasets.manifest import StatsFileError, UnitStats


class BuildProgress:
    """Context manager: shows files done / total with samples/s while the build runs."""

    def __init__(self, root: str | Path, total_sources: int, enabled: bool = True, interval_s: float = 1.0):
        self.root, self.total, self.interval = Path(root), total_sources, interval_s
        self.enabled = enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "BuildProgress":
        reset_progress(self.root)  # leftovers of a killed run
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="build-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def snapshot(self) -> tuple[int, int]:
        """(files done, samples written) over finished and running units."""
        done = samples = 0
        finished = set()
        for path in layout.stats_files(self.root):
            try:
                stats = UnitStats.read(path)
            except StatsFileError:
                continue  # being replaced right now; counted on the next tick
            finished.add(stats.unit_id)
            samples += stats.rows
            done += stats.sources or 0
        running_done, running_samples = read_progress(self.root, finished)
        return done + running_done, samples + running_samples

    def _run(self) -> None:
        from tqdm import tqdm

        with tqdm(total=self.total, desc="files", unit="file", dynamic_ncols=True) as bar:
            start_done, _ = self.snapshot()
            bar.update(start_done)
            while not self._stop.wait(self.interval):
                done, samples = self.snapshot()
                bar.update(done - bar.n)
                rate = samples / max(bar.format_dict["elapsed"], 1e-9)
                bar.set_postfix(samples=samples, samples_per_s=f"{rate:.2f}")
            done, samples = self.snapshot()
            bar.update(done - bar.n)
