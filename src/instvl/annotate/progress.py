"""The progress protocol of running units: one small file per unit, written by its worker, read by the bar.

A unit rewrites ROOT/.progress/<unit>.json (atomically) after every input file and removes it when it
ends, finished or failed; its stats file then counts it. The files work across threads, processes and
Ray workers that share the output folder, which is all a progress bar of a distributed build can rely on.
"""

import json
import shutil
from collections.abc import Collection
from pathlib import Path

from instvl.datasets import layout


def write_progress(root: Path, unit_id: str, done: int, total: int, samples: int) -> None:
    """Record that the unit has annotated `done` of its `total` input files into `samples` samples."""
    payload = json.dumps({"sources_done": done, "sources": total, "samples": samples}).encode()
    layout.atomic_write_bytes(layout.progress_path(root, unit_id), payload)


def clear_progress(root: Path, unit_id: str) -> None:
    """The unit ended: a failed attempt must not leave files counted as done."""
    layout.progress_path(root, unit_id).unlink(missing_ok=True)


def reset_progress(root: Path) -> None:
    """Remove the progress files of every unit (the leftovers of a killed run)."""
    shutil.rmtree(root / layout.PROGRESS_DIR, ignore_errors=True)


def read_progress(root: str | Path, finished: Collection[str] = ()) -> tuple[int, int]:
    """(sources done, samples written) of units in progress, leaving out the `finished` unit ids (their
    stats count them; a progress file lives on for a moment after its unit's stats file appears)."""
    done = samples = 0
    for path in (Path(root) / layout.PROGRESS_DIR).glob("*.json"):
        if path.stem in finished or path.name.startswith(layout.TMP_PREFIX):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; counted on the next tick
        done, samples = done + data["sources_done"], samples + data["samples"]
    return done, samples
