"""Where things live inside an InstVL dataset root: every root-relative name, and the paths derived from them.

    ROOT/manifest.json                    aggregated from the stats files (write_manifest)
    ROOT/shards/<unit>-<part>.parquet     the samples
    ROOT/stats/<unit>.stats.json          written last: the unit is done (manifest.UnitStats)
    ROOT/quarantine/<unit>.parquet        inputs that did not become samples, with the reason
    ROOT/plan.json                        input files partitioned into units (annotate.plan)
    ROOT/.plan.backup.json                its copy, used when plan.json is damaged
    ROOT/.progress/<unit>.json            files done by a running unit (annotate.progress)
    ROOT/.lock                            held by the build writing the root (writer.lock_root)
    ROOT/.leases/<unit>.lock              held by the writer of a unit (writer.UnitWriter)
    ROOT/.cache/captions.sqlite           the default caption cache (annotate.units)
    ROOT/report.html, ROOT/renders/       `instvl datasets inspect` and `datasets render`
    ROOT/media/<sample_id>.mp4|.jpg       media served to Label Studio (qa.push)
    ROOT/qa/push_state.json               sample -> Label Studio task (qa.push)
    ROOT/qa/reviews.jsonl, qa/report.html reviewed samples and the QC report (qa.pull, qa.report)

Nothing else in the package spells one of these names.
"""

import os
from pathlib import Path

MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
STATS_DIR = "stats"
QUARANTINE_DIR = "quarantine"
SHARD_FILE = "{unit_id}-{part:03d}.parquet"
STATS_FILE = "{unit_id}.stats.json"
STATS_GLOB = "*.stats.json"
QUARANTINE_FILE = "{unit_id}.parquet"
PLAN_FILE = "plan.json"
PLAN_BACKUP = ".plan.backup.json"
PROGRESS_DIR = ".progress"
LOCK_FILE = ".lock"
LEASES_DIR = ".leases"
CACHE_DIR = ".cache"
CACHE_FILE = "captions.sqlite"
REPORT_FILE = "report.html"
RENDERS_DIR = "renders"
MEDIA_DIR = "media"
PUSH_STATE_FILE = "qa/push_state.json"
REVIEWS_FILE = "qa/reviews.jsonl"
QA_REPORT_FILE = "qa/report.html"
TMP_PREFIX = ".tmp-"
"""Files still being written start with this prefix, so no reader glob (`*.parquet`) ever sees them."""


def shard_path(root: Path, unit_id: str, part: int) -> Path:
    return root / SHARDS_DIR / SHARD_FILE.format(unit_id=unit_id, part=part)


def stats_path(root: Path, unit_id: str) -> Path:
    return root / STATS_DIR / STATS_FILE.format(unit_id=unit_id)


def quarantine_path(root: Path, unit_id: str) -> Path:
    return root / QUARANTINE_DIR / QUARANTINE_FILE.format(unit_id=unit_id)


def stats_files(root: Path) -> list[Path]:
    """The finished units' stats files, sorted by unit id (files still being written left out)."""
    return sorted(p for p in (root / STATS_DIR).glob(STATS_GLOB) if not p.name.startswith(TMP_PREFIX))


def unit_of_stats(path: Path) -> str:
    """The unit id of a stats file."""
    return path.name.removesuffix(STATS_FILE.format(unit_id=""))


def progress_path(root: Path, unit_id: str) -> Path:
    return root / PROGRESS_DIR / f"{unit_id}.json"


def lease_path(root: Path, unit_id: str) -> Path:
    return root / LEASES_DIR / f"{unit_id}.lock"


def tmp_path(final: Path) -> Path:
    """A hidden sibling of `final` to write before renaming into place."""
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")


def check_unit_id(unit_id: str) -> str:
    """Unit ids become file names: refuse separators and hidden names."""
    if not unit_id or "/" in unit_id or "\\" in unit_id or unit_id.startswith("."):
        raise ValueError(f"invalid unit id {unit_id!r}: use a plain name such as 'shard-00000'")
    return unit_id


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make renames into the folder `path` durable: a crash right after cannot undo them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
