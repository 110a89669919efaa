"""Where things live inside an InstVL dataset root; every path is derived from a unit id."""

import os
from pathlib import Path

MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
STATS_DIR = "stats"
QUARANTINE_DIR = "quarantine"
SHARD_FILE = "{unit_id}-{part:03d}.parquet"
STATS_FILE = "{unit_id}.stats.json"
QUARANTINE_FILE = "{unit_id}.parquet"
TMP_PREFIX = ".tmp-"
"""Files still being written start with this prefix, so no reader glob (`*.parquet`) ever sees them."""


def shard_path(root: Path, unit_id: str, part: int) -> Path:
    return root / SHARDS_DIR / SHARD_FILE.format(unit_id=unit_id, part=part)


def stats_path(root: Path, unit_id: str) -> Path:
    return root / STATS_DIR / STATS_FILE.format(unit_id=unit_id)


def quarantine_path(root: Path, unit_id: str) -> Path:
    return root / QUARANTINE_DIR / QUARANTINE_FILE.format(unit_id=unit_id)


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
