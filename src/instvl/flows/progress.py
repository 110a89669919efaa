"""A progress bar for builds whose work happens in other threads or processes (Prefect, Ray).

Units report to small files (`OUT/.progress/<unit>.json`, removed when the unit finishes) and their
stats files; a background thread sums both once a second into a tqdm bar with samples/s and ETA.
"""

import json
import shutil
import sys
import threading
from pathlib import Path
from types import TracebackType

from instvl.annotate.units import PROGRESS_DIR, read_progress
from instvl.datasets import layout


class BuildProgress:
    """Context manager: shows files done / total with samples/s while the build runs."""

    def __init__(self, root: str | Path, total_sources: int, enabled: bool = True, interval_s: float = 1.0):
        self.root, self.total, self.interval = Path(root), total_sources, interval_s
        self.enabled = enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "BuildProgress":
        shutil.rmtree(self.root / PROGRESS_DIR, ignore_errors=True)  # leftovers of a killed run
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
        for path in (self.root / layout.STATS_DIR).glob("*.stats.json"):
            if path.name.startswith(layout.TMP_PREFIX):
                continue
            try:
                stats = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now; counted on the next tick
            finished.add(stats.get("unit_id"))
            samples += stats.get("rows", 0)
            done += stats.get("sources", 0)
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
