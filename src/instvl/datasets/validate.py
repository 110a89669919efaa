"""Validate an InstVL dataset root: layout, schema and version, checksums, row counts and row invariants.

Shards are streamed one row group at a time and only the columns the checks need are read (the
media bytes only with `check_media`), so memory stays flat however large the dataset is.

    report = validate_dataset("out/synth")
    for violation in report.errors:
        print(violation)   # shards/shard-00000-000.parquet: sample s-00003 instance 2: frame 4: box ...
"""

import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from instvl.config import BaseConfig
from instvl.datasets import layout
from instvl.datasets.invariants import ROW_COLUMNS, ROW_RULES, check_row
from instvl.datasets.manifest import ShardEntry, StatsFileError, UnitStats, sha256_file
from instvl.datasets.schema import (
    METADATA_VERSION_KEY,
    QUARANTINE_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    SampleRow,
    major,
)
from instvl.datasets.violations import ValidationReport, Violation
from instvl.media.decode import decode_frames, media_of
from instvl.media.fetch import MediaError

__all__ = ["RULES", "ValidateConfig", "ValidationReport", "Violation", "main", "validate_dataset"]

log = logging.getLogger(__name__)

FILE_RULES = {
    "layout": "the root holds a shards/ folder",
    "manifest": "manifest.json exists, parses, and lists exactly the finished shards",
    "stats": "every stats file parses",
    "missing_shard": "every shard a stats file lists exists",
    "unreadable": "every shard opens as Parquet",
    "schema": "every shard's Arrow schema equals SCHEMA (metadata ignored)",
    "schema_version": "every shard carries a readable schema version this instvl reads",
    "checksum": "sha256 of every shard matches its stats file and the manifest",
    "row_count": "rows in every shard match its stats file and the manifest; the manifest's totals "
                 "and per-unit rows match the stats files",
    "failed_unit": "every unit of plan.json has a stats file (a unit without one failed or never ran)",
    "quarantine": "every quarantine file a stats file lists exists with QUARANTINE_SCHEMA",
    "sample_id_unique": "sample ids are unique across the dataset",
    "media": "with check_media: the first frame decodes and its size equals width x height",
    "temp_file": "(warning) no hidden temporary files are left over by an interrupted writer",
    "orphan_shard": "(warning) no visible shard is missing from every stats file",
}
RULES = {**FILE_RULES, **ROW_RULES}
"""Every rule the validator checks, name -> what it requires."""

ManifestShards = dict[str, dict[str, Any]]
"""manifest.json's shard entries by their root-relative path."""


class ValidateConfig(BaseConfig):
    """`instvl datasets validate ROOT`: check a dataset root and exit non-zero on violations."""

    root: str
    """The dataset root (holds manifest.json and shards/)."""
    check_media: bool = False
    """Also decode the first frame of every sample and compare its size with width/height (slow)."""
    max_errors: int = 1000
    """Keep at most this many violations in the report (the rest are only counted)."""
    batch_rows: int = 256
    """Rows per record batch while streaming a row group."""


def validate_dataset(root: str | Path, *, check_media: bool = False, max_errors: int = 1000,
                     batch_rows: int = 256) -> ValidationReport:
    """Check every rule in `RULES` over the dataset at `root`."""
    root = Path(root)
    report = ValidationReport(str(root), max_errors=max_errors)
    if not (root / layout.SHARDS_DIR).is_dir():
        report.add(Violation(str(root), None, None, "layout",
                             f"no {layout.SHARDS_DIR}/ folder: not an InstVL dataset root"))
        return report
    _check_temp_files(root, report)
    manifest_shards = _check_manifest(root, report)
    existing, listed = _check_units(root, report, manifest_shards)
    _check_orphans(root, report, listed, manifest_shards)
    _check_manifest_totals(root, report)
    _check_plan(root, report)
    seen_ids: dict[str, str] = {}
    for path in _with_progress(existing, "shards"):
        _check_shard(root, path, report, seen_ids, check_media, batch_rows)
    return report


def _with_progress(items: list[Path], unit: str) -> Iterable[Path]:
    """`items`, with a progress bar when a person watches (stderr is a terminal)."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc="validating", unit=unit.rstrip("s"))


def _check_temp_files(root: Path, report: ValidationReport) -> None:
    for folder in (root, root / layout.SHARDS_DIR, root / layout.STATS_DIR, root / layout.QUARANTINE_DIR):
        for path in sorted(folder.glob(f"{layout.TMP_PREFIX}*")) if folder.is_dir() else []:
            report.add(Violation(_rel(root, path), None, None, "temp_file",
                                 "temporary file left over by an interrupted writer (rerun that unit)",
                                 "warning"))


def _check_manifest(root: Path, report: ValidationReport) -> ManifestShards | None:
    """The manifest's shard entries by path, or None when there is no usable manifest."""
    path = root / layout.MANIFEST
    if not path.is_file():
        report.add(Violation(layout.MANIFEST, None, None, "manifest",
                             "missing (run write_manifest on the root)"))
        return None
    try:
        manifest = json.loads(path.read_text())
        version = str(manifest["schema_version"])
        shards = {entry["path"]: entry for entry in manifest["shards"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        report.add(Violation(layout.MANIFEST, None, None, "manifest", f"unreadable manifest ({err!r})"))
        return None
    problem = _version_problem(version)
    if problem:
        report.add(Violation(layout.MANIFEST, None, None, "schema_version", problem))
    return shards


def _check_units(root: Path, report: ValidationReport,
                 manifest_shards: ManifestShards | None) -> tuple[list[Path], set[str]]:
    """Check each stats file's shards against the files and the manifest.

    Returns the shards that exist and the relative paths of every shard a stats file lists.
    """
    existing, listed = [], set()
    for stats_file in layout.stats_files(root):
        try:
            stats = UnitStats.read(stats_file)
        except StatsFileError as err:
            report.add(Violation(_rel(root, stats_file), None, None, "stats", str(err)))
            continue
        for entry in stats.shards:
            listed.add(entry.path)
            shard = root / entry.path
            if not shard.is_file():
                report.add(Violation(entry.path, None, None, "missing_shard",
                                     f"listed in {stats_file.name} but the file does not exist"))
                continue
            existing.append(shard)
            _check_entry(root, shard, entry, stats_file.name, report, manifest_shards)
        _check_quarantine(root, stats, stats_file.name, report)
    return existing, listed


def _check_entry(root: Path, shard: Path, entry: ShardEntry, stats_name: str, report: ValidationReport,
                 manifest_shards: ManifestShards | None) -> None:
    rel = _rel(root, shard)
    digest = sha256_file(shard)
    if digest != entry.sha256:
        report.add(Violation(rel, None, None, "checksum", f"sha256 {digest[:12]}... does not match "
                             f"{stats_name} ({entry.sha256[:12]}...)"))
    if manifest_shards is None:
        return
    listed = manifest_shards.get(entry.path)
    if listed is None:
        report.add(Violation(rel, None, None, "manifest", "finished shard missing from manifest.json "
                             "(run write_manifest on the root)"))
    elif listed.get("sha256") != digest:
        report.add(Violation(rel, None, None, "checksum", f"sha256 {digest[:12]}... does not match "
                             f"manifest.json ({str(listed.get('sha256'))[:12]}...)"))
    if listed is not None and listed.get("rows") != entry.rows:
        report.add(Violation(rel, None, None, "row_count", f"manifest.json says {listed.get('rows')} rows, "
                             f"{stats_name} says {entry.rows}"))


def _check_quarantine(root: Path, stats: UnitStats, stats_name: str, report: ValidationReport) -> None:
    rel = stats.quarantine_path
    if not rel:
        return
    try:
        schema = pq.read_schema(root / rel)
    except (OSError, pa.ArrowInvalid) as err:
        report.add(Violation(rel, None, None, "quarantine", f"listed in {stats_name} but unreadable ({err})"))
        return
    if not schema.equals(QUARANTINE_SCHEMA, check_metadata=False):
        report.add(Violation(rel, None, None, "quarantine", "schema differs from QUARANTINE_SCHEMA"))


def _check_orphans(root: Path, report: ValidationReport, listed_rel: set[str],
                   manifest_shards: ManifestShards | None) -> None:
    for path in sorted((root / layout.SHARDS_DIR).glob("*.parquet")):
        if not path.name.startswith(".") and _rel(root, path) not in listed_rel:
            report.add(Violation(_rel(root, path), None, None, "orphan_shard",
                                 "visible shard without a stats file (an interrupted writer?); readers "
                                 "ignore it, rerun its unit", "warning"))
    for rel in sorted(set(manifest_shards or {}) - listed_rel):
        report.add(Violation(rel, None, None, "manifest", "listed in manifest.json but in no stats file "
                             "(run write_manifest on the root)"))


def _check_manifest_totals(root: Path, report: ValidationReport) -> None:
    """The manifest's counts are the sums of the stats files (an edited or stale manifest is caught)."""
    try:
        manifest = json.loads((root / layout.MANIFEST).read_text())
        units = {u["unit_id"]: u for u in manifest["units"]}
        num_rows = manifest["num_rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # reported by _check_manifest
    stats = []
    for path in layout.stats_files(root):
        try:
            stats.append(UnitStats.read(path))
        except StatsFileError:
            continue  # reported by _check_units
    total = sum(s.rows for s in stats)
    if num_rows != total:
        report.add(Violation(layout.MANIFEST, None, None, "row_count",
                             f"num_rows is {num_rows}, the stats files hold {total}"))
    for unit in stats:
        listed = units.get(unit.unit_id)
        if listed is None:
            report.add(Violation(layout.MANIFEST, None, None, "manifest",
                                 f"unit {unit.unit_id} is finished but missing from the manifest"))
        elif listed.get("rows") != unit.rows:
            report.add(Violation(layout.MANIFEST, None, None, "row_count", f"unit {unit.unit_id}: "
                                 f"{listed.get('rows')} rows, its stats file says {unit.rows}"))


def _check_plan(root: Path, report: ValidationReport) -> None:
    """Units planned but without stats: their inputs are not in the dataset (failed, or not run yet)."""
    try:
        units = [u["unit_id"] for u in json.loads((root / layout.PLAN_FILE).read_text())["units"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a build output (or its plan is damaged: the next build restores or refuses it)
    finished = {layout.unit_of_stats(path) for path in layout.stats_files(root)}
    missing = [unit_id for unit_id in units if unit_id not in finished]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        report.add(Violation(layout.PLAN_FILE, None, None, "failed_unit",
                             f"{len(missing)} of {len(units)} planned units have no stats file ({shown}): "
                             "they failed or never ran; rerun the build"))


def _check_shard(root: Path, path: Path, report: ValidationReport, seen_ids: dict[str, str],
                 check_media: bool, batch_rows: int) -> None:
    rel = _rel(root, path)
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowInvalid) as err:
        report.add(Violation(rel, None, None, "unreadable", f"cannot open as Parquet ({err})"))
        return
    report.shards += 1
    schema = parquet.schema_arrow
    found = (schema.metadata or {}).get(METADATA_VERSION_KEY)
    problem = _version_problem(found.decode(errors="replace") if found is not None else None)
    if problem:
        report.add(Violation(rel, None, None, "schema_version", problem))
    if not schema.equals(SCHEMA, check_metadata=False):
        report.add(Violation(rel, None, None, "schema", _schema_difference(schema)))
        return
    _check_row_count(root, path, parquet.metadata.num_rows, report)
    columns = ROW_COLUMNS + (["media", "source"] if check_media else [])
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for row in batch.to_pylist():
                _check_one_row(rel, row, report, seen_ids, check_media)
    except (OSError, pa.ArrowException) as err:
        report.add(Violation(rel, None, None, "unreadable", f"row data does not decode ({err})"))


def _check_one_row(rel: str, row: SampleRow, report: ValidationReport, seen_ids: dict[str, str],
                   check_media: bool) -> None:
    sample_id = row["sample_id"]
    report.rows += 1
    report.instances += len(row.get("instances") or [])
    if sample_id in seen_ids:
        report.add(Violation(rel, sample_id, None, "sample_id_unique",
                             f"sample id also used in {seen_ids[sample_id]}"))
    else:
        seen_ids[sample_id] = rel
    for problem in check_row(row):
        report.add(Violation(rel, sample_id, problem.instance_id, problem.rule, problem.message))
    if check_media:
        media_problem = check_media_size(row)
        if media_problem:
            report.add(Violation(rel, sample_id, None, "media", media_problem))


def _check_row_count(root: Path, path: Path, rows: int, report: ValidationReport) -> None:
    stats_file = layout.stats_path(root, _unit_of(path))
    try:
        entries = {e.path: e.rows for e in UnitStats.read(stats_file).shards}
    except StatsFileError:
        return  # already reported as a stats problem
    expected = entries.get(_rel(root, path))
    if expected != rows:
        report.add(Violation(_rel(root, path), None, None, "row_count",
                             f"file holds {rows} rows, {stats_file.name} says {expected}"))


def check_media_size(row: SampleRow) -> str | None:
    """Decode the first frame of the row's media and compare its size with width x height."""
    media = media_of(row)
    if media is None:
        return None  # neither embedded bytes nor a local file: nothing to decode
    try:
        frame = decode_frames(media, str(row.get("sample_id")), [0], decoder="pyav").frames[0]
    except MediaError as err:
        return f"media does not decode: {err.reason}"
    height, width = frame.shape[:2]
    if (width, height) != (row.get("width"), row.get("height")):
        return f"first frame is {width}x{height} but the row says {row.get('width')}x{row.get('height')}"
    return None


def _version_problem(found: str | None) -> str | None:
    if found is None:
        return f"no {METADATA_VERSION_KEY.decode()} in the file metadata"
    try:
        ok = major(found) == major(SCHEMA_VERSION)
    except ValueError:
        return f"schema version {found!r} is not a version number"
    return None if ok else f"schema version {found} (this instvl reads {SCHEMA_VERSION})"


def _schema_difference(schema: pa.Schema) -> str:
    missing = [n for n in SCHEMA.names if n not in schema.names]
    extra = [n for n in schema.names if n not in SCHEMA.names]
    changed = [n for n in SCHEMA.names if n in schema.names and not schema.field(n).equals(SCHEMA.field(n))]
    parts = [f"missing columns {missing}" if missing else "", f"unexpected columns {extra}" if extra else "",
             f"columns of another type {changed}" if changed else ""]
    return "schema differs from SCHEMA: " + "; ".join(p for p in parts if p)


def _unit_of(shard: Path) -> str:
    return shard.name.removesuffix(".parquet").rsplit("-", 1)[0]


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main(cfg: ValidateConfig) -> int:
    """Validate `cfg.root`, print the summary and the violations; 1 when there are errors."""
    report = validate_dataset(cfg.root, check_media=cfg.check_media, max_errors=cfg.max_errors,
                              batch_rows=cfg.batch_rows)
    print(report.summary())
    for violation in report.violations:
        print(f"{violation.severity.upper()}: {violation}")
    hidden = sum(report.counts.values()) - len(report.violations)
    if hidden:
        print(f"... {hidden} more not shown (raise max_errors)")
    print("OK" if report.ok else f"FAILED: {report.num_errors} violation(s)")
    return 0 if report.ok else 1
