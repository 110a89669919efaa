"""The build plan: input files partitioned into work units, fixed once and extended on reruns.

The plan (`OUTPUT/plan.json`) is what makes a build resumable: unit `unit-00003` always means the
same files, so a rerun skips units whose stats file exists and redoes only the rest. New files found
on a rerun go into new units; byte-identical files are assigned to a unit as duplicates so they are
quarantined with the name of the file they repeat (instead of producing the same sample id twice).

The plan records the hash of the annotation config it was made with (`plan_config_hash`: the paths
left out), so a rerun with another config is refused instead of silently mixing two configs in one
dataset; `new_version=True` accepts it and redoes every unit (a new dataset version in place). It is
saved twice (plan.json and a backup), so a damaged plan.json is restored rather than ending the build.
"""

import hashlib
import json
import logging
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec

from instvl.annotate.config import AnnotateConfig
from instvl.config import config_hash
from instvl.datasets import layout
from instvl.media.ingest import list_sources

log = logging.getLogger(__name__)


class PlanError(ValueError):
    """Nothing to build: the input is missing or holds no media."""


@dataclass
class Unit:
    unit_id: str
    sources: list[str]
    duplicates: dict[str, str] = field(default_factory=dict)
    """uri -> the earlier uri with the same bytes."""


@dataclass
class Plan:
    input: str
    units: list[Unit]
    config_hash: str | None = None
    """`plan_config_hash` of the config the units were planned (and are built) with."""

    def unit(self, unit_id: str) -> Unit:
        for unit in self.units:
            if unit.unit_id == unit_id:
                return unit
        raise KeyError(f"unit {unit_id!r} is not in the plan")

    @property
    def num_sources(self) -> int:
        return sum(len(u.sources) for u in self.units)


# Output settings that change how rows are grouped into files or cached, never a row.
_LAYOUT_ONLY = {"sources_per_unit", "target_shard_bytes", "row_group_rows", "caption_cache", "cache_dir"}


def output_root(cfg: AnnotateConfig) -> Path:
    """The dataset root `cfg.output` as a Path; every build step needs it, so an unset one is a PlanError."""
    if not cfg.output:
        raise PlanError("set `output` (the dataset root to write)")
    return Path(cfg.output)


def plan_config_hash(cfg: AnnotateConfig) -> str:
    """The hash of what the rows are made of: the annotation config without its paths and file layout."""
    annotation = cfg.rows_config()  # execution settings (`engine`) change no row
    defaults = type(annotation.out).model_fields
    out = annotation.out.model_copy(update={k: defaults[k].default for k in _LAYOUT_ONLY})
    return config_hash(annotation.model_copy(update={"input": None, "output": None, "out": out}))


def load_plan(root: str | Path) -> Plan | None:
    """OUTPUT/plan.json (or its backup when plan.json is damaged), or None when there is none yet."""
    path = Path(root) / layout.PLAN_FILE
    backup = Path(root) / layout.PLAN_BACKUP
    if not path.is_file() and not backup.is_file():
        return None
    try:
        return _parse_plan(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        try:
            plan = _parse_plan(backup)
        except (OSError, ValueError, KeyError, TypeError):
            # Unit ids only mean something with their plan: do not replan over existing stats files.
            raise PlanError(f"{path}: not a valid build plan ({type(err).__name__}: {err}) and no valid "
                            f"backup; restore it, or start over in an empty output folder") from err
        log.warning("%s is damaged (%s: %s); using its backup %s", path, type(err).__name__, err, backup.name)
        return plan


def _parse_plan(path: Path) -> Plan:
    data = json.loads(path.read_text())
    return Plan(data["input"], [Unit(**u) for u in data["units"]], data.get("config_hash"))


def require_plan(root: str | Path) -> Plan:
    """OUTPUT/plan.json, which must exist: units and flows run what `make_plan` planned, never list again."""
    plan = load_plan(root)
    if plan is None:
        raise FileNotFoundError(f"{Path(root) / layout.PLAN_FILE}: no build plan (run make_plan first)")
    return plan


def save_plan(root: str | Path, plan: Plan) -> None:
    data = json.dumps(asdict(plan), indent=1).encode()
    layout.atomic_write_bytes(Path(root) / layout.PLAN_BACKUP, data)
    layout.atomic_write_bytes(Path(root) / layout.PLAN_FILE, data)


def make_plan(cfg: AnnotateConfig, *, new_version: bool = False) -> Plan:
    """Load OUTPUT/plan.json and add units for files not planned yet (creating it on the first run).

    A plan made with another annotation config is refused, unless `new_version`: then every finished
    unit is marked to be redone with this config.
    """
    if not cfg.input or not cfg.output:
        raise PlanError("set both `input` and `output`")
    root = output_root(cfg)
    uris, failures = list_sources(cfg.input, cfg.ingest)
    if not uris:
        reasons = "; ".join(str(f) for f in failures) or "no media files"
        raise PlanError(f"nothing to annotate in {cfg.input}: {reasons}")
    wanted = plan_config_hash(cfg)
    plan = load_plan(root) or _new_plan(cfg.input, root, wanted)
    changed = plan.config_hash != wanted
    if changed and plan.config_hash is not None and plan.units:
        if not new_version:
            raise PlanError(f"{root / layout.PLAN_FILE}: planned with annotation config "
                            f"{plan.config_hash}, this run's is {wanted}; build into a new output folder, "
                            "or rebuild every unit with this config (flow.new_version=true)")
        _start_new_version(root)
    plan.config_hash = wanted
    planned = {uri for unit in plan.units for uri in unit.sources}
    new = [uri for uri in uris if uri not in planned]
    if changed and not new:
        root.mkdir(parents=True, exist_ok=True)
        save_plan(root, plan)
    if new:
        duplicates = find_duplicates([*planned, *new]) if cfg.ingest.dedupe else {}
        size = cfg.out.sources_per_unit
        for start in range(0, len(new), size):
            chunk = new[start:start + size]
            unit_id = f"unit-{len(plan.units):05d}"
            plan.units.append(Unit(unit_id, chunk, {u: duplicates[u] for u in chunk if u in duplicates}))
        root.mkdir(parents=True, exist_ok=True)
        save_plan(root, plan)
        log.info("planned %d new files in %d units", len(new), -(-len(new) // size))
    return plan


def plan_or_report(cfg: AnnotateConfig, command: str) -> Plan | None:
    """`make_plan` for a command's `main`: the plan, or None once the reason is printed (exit with 2)."""
    try:
        return make_plan(cfg)
    except PlanError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return None


def _start_new_version(root: Path) -> None:
    """Every unit is redone with the new config: remove the done markers (writers replace the shards)."""
    stats = layout.stats_files(root)
    log.warning("annotation config changed: rebuilding all %d finished units of %s", len(stats), root)
    for path in stats:
        path.unlink()
    (root / layout.MANIFEST).unlink(missing_ok=True)


def _new_plan(input_uri: str, root: Path, config_hash: str) -> Plan:
    """An empty plan, refused where finished units exist: their ids would point at other files."""
    stats = layout.stats_files(root)
    if stats:
        raise PlanError(f"{root / layout.PLAN_FILE}: missing, but {len(stats)} units are finished "
                        f"(e.g. {stats[0].name}); restore the plan, or start over in an empty output folder")
    return Plan(input_uri, [], config_hash)


def find_duplicates(uris: list[str]) -> dict[str, str]:
    """uri -> first uri with identical bytes; only files whose sizes collide are hashed."""
    by_size: dict[int, list[str]] = defaultdict(list)
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            by_size[int(fs.size(path))].append(uri)
        except OSError:
            continue  # unreadable files are reported when their unit runs
    duplicates: dict[str, str] = {}
    for same_size in by_size.values():
        first_by_hash: dict[str, str] = {}
        for uri in same_size if len(same_size) > 1 else ():
            digest = _sha256(uri)
            if digest in first_by_hash:
                duplicates[uri] = first_by_hash[digest]
            else:
                first_by_hash[digest] = uri
    return duplicates


def _sha256(uri: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(uri, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
