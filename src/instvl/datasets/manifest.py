"""Per-unit stats files (the done markers), the dataset manifest aggregated from them, and its summary."""

import hashlib
import json
import logging
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from instvl import __version__
from instvl.datasets import layout
from instvl.datasets.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)


class NotADatasetError(FileNotFoundError):
    """The path is not an InstVL dataset root."""


class StatsFileError(ValueError):
    """A stats file that does not parse or lacks a key; the message names the file."""


@dataclass(frozen=True)
class ShardEntry:
    """One published shard file of a unit."""

    path: str
    """Relative to the dataset root."""
    rows: int
    bytes: int
    row_groups: int
    sha256: str


@dataclass(frozen=True)
class UnitStats:
    """ROOT/stats/<unit>.stats.json: what one finished unit wrote. The file is written last, so its
    existence means the unit's shards are complete (the done marker readers and reruns trust)."""

    unit_id: str
    schema_version: str
    instvl_version: str
    rows: int
    instances: int
    quarantined: int
    """Inputs of the unit that did not become samples."""
    quarantine_path: str | None
    """Their quarantine file, relative to the root (None when nothing was quarantined)."""
    config_hash: str | None
    seconds: float
    finished_at: str
    """ISO 8601, UTC."""
    shards: list[ShardEntry] = field(default_factory=list)
    sources: int | None = None
    """Input files of the unit (annotation builds; None for writers without input files)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str | Path) -> "UnitStats":
        """Parse `data` (the JSON of the file `source`); a missing key is an error naming the file.

        Keys this version does not know are ignored, so a newer writer's extra fields do not break reads.
        """
        if not isinstance(data, dict):
            raise StatsFileError(f"{source}: a stats file holds a JSON object, not {type(data).__name__}")
        _require(data, cls, source)
        try:
            shards = [ShardEntry(**{k: entry[k] for k in _names(ShardEntry)}) for entry in data["shards"]]
        except (KeyError, TypeError) as err:
            keys = ", ".join(_names(ShardEntry))
            raise StatsFileError(f"{source}: a shard entry lacks {err} (keys: {keys})") from None
        values = {name: data[name] for name in _names(cls) if name in data}
        return cls(**{**values, "shards": shards})

    @classmethod
    def read(cls, path: Path) -> "UnitStats":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StatsFileError(f"{path}: unreadable stats file ({err})") from err
        return cls.from_json(data, path)

    def write(self, path: Path) -> None:
        layout.atomic_write_bytes(path, json.dumps(self.to_json(), indent=1).encode())


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _require(data: dict[str, Any], cls: type, source: str | Path) -> None:
    """Every field without a default must be present."""
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in [*required, "shards"] if name not in data]
    if missing:
        raise StatsFileError(f"{source}: stats file lacks {', '.join(missing)} (written by another instvl "
                             "version, or edited by hand?)")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def unit_done(root: str | Path, unit_id: str) -> bool:
    """True when the unit's stats file exists, parses, and every shard it lists exists with its size.

    A damaged stats file (truncated, edited) or one whose shard vanished means the unit is not done:
    the next run redoes it (its writer removes the old files) instead of failing every later build.
    """
    return _intact_stats(Path(root), layout.stats_path(Path(root), unit_id)) is not None


def _intact_stats(root: Path, path: Path) -> UnitStats | None:
    if not path.is_file():
        return None
    try:
        stats = UnitStats.read(path)
    except StatsFileError as err:
        log.warning("%s; its unit will be redone", err)
        return None
    for shard in stats.shards:
        try:
            size = (root / shard.path).stat().st_size
        except OSError:
            size = None
        if size != shard.bytes:
            log.warning("%s: shard %s is missing or has another size; its unit will be redone", path,
                        shard.path)
            return None
    return stats


def read_unit_stats(root: str | Path) -> list[UnitStats]:
    """Stats of every finished unit, sorted by unit id (damaged stats files are left out: not done)."""
    root = Path(root)
    return [stats for path in layout.stats_files(root) if (stats := _intact_stats(root, path)) is not None]


def done_units(root: str | Path) -> set[str]:
    return {s.unit_id for s in read_unit_stats(root)}


def write_manifest(root: str | Path) -> dict[str, Any]:
    """Rebuild ROOT/manifest.json from the stats files (safe to call after any unit finishes)."""
    root = Path(root)
    units = read_unit_stats(root)
    shards = [asdict(shard) for unit in units for shard in unit.shards]
    manifest = {
        "format": "instvl",
        "schema_version": SCHEMA_VERSION,
        "instvl_version": __version__,
        "updated_at": datetime.now(UTC).isoformat(),
        "num_units": len(units),
        "num_shards": len(shards),
        "num_rows": sum(s["rows"] for s in shards),
        "num_instances": sum(u.instances for u in units),
        "num_quarantined": sum(u.quarantined for u in units),
        "num_bytes": sum(s["bytes"] for s in shards),
        "config_hashes": sorted({u.config_hash for u in units if u.config_hash}),
        "shards": shards,
        "units": [{k: v for k, v in u.to_json().items() if k != "shards"} for u in units],
    }
    layout.atomic_write_bytes(root / layout.MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest, or a clear error when ROOT is not a dataset root."""
    path = Path(root) / layout.MANIFEST
    if not path.is_file():
        if read_unit_stats(root):
            return write_manifest(root)
        raise NotADatasetError(f"{root}: not an InstVL dataset root (no {layout.MANIFEST}, "
                               "no finished shards)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: manifest is not valid JSON ({err})") from err


def list_shards(root: str | Path) -> list[Path]:
    """Paths of the shards of every finished unit, in unit then part order."""
    root = Path(root)
    if not (root / layout.SHARDS_DIR).is_dir():
        raise NotADatasetError(f"{root}: not an InstVL dataset root (no {layout.SHARDS_DIR}/ folder)")
    return [root / shard.path for unit in read_unit_stats(root) for shard in unit.shards]


def summarize(manifest: dict[str, Any], root: Path) -> str:
    """A few lines a person reads at the end of a build: counts, then every quarantined input and why."""
    lines = [f"{root}: {manifest['num_rows']} samples, {manifest['num_instances']} instances in "
             f"{manifest['num_shards']} shards ({manifest['num_bytes'] / 1e6:.1f} MB)",
             f"quarantined inputs: {manifest['num_quarantined']}"]
    if manifest["num_quarantined"]:
        import pyarrow.parquet as pq

        for unit in manifest["units"]:
            if unit.get("quarantine_path"):
                for row in pq.read_table(root / unit["quarantine_path"]).to_pylist():
                    lines.append(f"  {row['uri']}: {row['reason']} (at {row['stage']})")
    return "\n".join(lines)
