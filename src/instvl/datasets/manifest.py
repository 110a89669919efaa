"""Per-unit stats files (the done markers) and the dataset manifest aggregated from them."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from instvl import __version__
from instvl.datasets import layout
from instvl.datasets.schema import SCHEMA_VERSION


class NotADatasetError(FileNotFoundError):
    """The path is not an InstVL dataset root."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def unit_done(root: str | Path, unit_id: str) -> bool:
    """True when the unit's stats file exists: its shards are complete and visible."""
    return layout.stats_path(Path(root), unit_id).is_file()


def read_unit_stats(root: str | Path) -> list[dict[str, Any]]:
    """Stats of every finished unit, sorted by unit id."""
    stats_dir = Path(root) / layout.STATS_DIR
    files = sorted(p for p in stats_dir.glob("*.stats.json") if not p.name.startswith(layout.TMP_PREFIX))
    stats = []
    for path in files:
        try:
            stats.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable stats file ({err})") from err
    return stats


def done_units(root: str | Path) -> set[str]:
    return {s["unit_id"] for s in read_unit_stats(root)}


def write_manifest(root: str | Path) -> dict[str, Any]:
    """Rebuild ROOT/manifest.json from the stats files (safe to call after any unit finishes)."""
    root = Path(root)
    units = read_unit_stats(root)
    shards = [shard for unit in units for shard in unit["shards"]]
    manifest = {
        "format": "instvl",
        "schema_version": SCHEMA_VERSION,
        "instvl_version": __version__,
        "updated_at": datetime.now(UTC).isoformat(),
        "num_units": len(units),
        "num_shards": len(shards),
        "num_rows": sum(s["rows"] for s in shards),
        "num_instances": sum(u.get("instances", 0) for u in units),
        "num_quarantined": sum(u.get("quarantined", 0) for u in units),
        "num_bytes": sum(s["bytes"] for s in shards),
        "config_hashes": sorted({u["config_hash"] for u in units if u.get("config_hash")}),
        "shards": shards,
        "units": [{k: v for k, v in u.items() if k != "shards"} for u in units],
    }
    layout.atomic_write_bytes(root / layout.MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest, or a clear error when ROOT is not a dataset root."""
    path = Path(root) / layout.MANIFEST
    if not path.is_file():
        if read_unit_stats(root):
            return write_manifest(root)
        raise NotADatasetError(f"{root}: not an InstVL dataset root (no {layout.MANIFEST}, no finished shards)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: manifest is not valid JSON ({err})") from err


def list_shards(root: str | Path) -> list[Path]:
    """Paths of the shards of every finished unit, in unit then part order."""
    root = Path(root)
    if not (root / layout.SHARDS_DIR).is_dir():
        raise NotADatasetError(f"{root}: not an InstVL dataset root (no {layout.SHARDS_DIR}/ folder)")
    return [root / shard["path"] for unit in read_unit_stats(root) for shard in unit["shards"]]
