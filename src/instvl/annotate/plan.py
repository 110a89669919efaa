"""The build plan: input files partitioned into work units, fixed once and extended on reruns.

The plan (`OUTPUT/plan.json`) is what makes a build resumable: unit `unit-00003` always means the
same files, so a rerun skips units whose stats file exists and redoes only the rest. New files found
on a rerun go into new units; byte-identical files are assigned to a unit as duplicates so they are
quarantined with the name of the file they repeat (instead of producing the same sample id twice).
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

    def unit(self, unit_id: str) -> Unit:
        for unit in self.units:
            if unit.unit_id == unit_id:
                return unit
        raise KeyError(f"unit {unit_id!r} is not in the plan")

    @property
    def num_sources(self) -> int:
        return sum(len(u.sources) for u in self.units)


def load_plan(root: str | Path) -> Plan | None:
    """OUTPUT/plan.json, or None when there is none yet."""
    path = Path(root) / layout.PLAN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Plan(data["input"], [Unit(**u) for u in data["units"]])
    except (ValueError, KeyError, TypeError) as err:
        # Unit ids only mean something with their plan: do not replan over existing stats files.
        raise PlanError(f"{path}: not a valid build plan ({type(err).__name__}: {err}); restore it, or "
                        "start over in an empty output folder") from err


def require_plan(root: str | Path) -> Plan:
    """OUTPUT/plan.json, which must exist: units and flows run what `make_plan` planned, never list again."""
    plan = load_plan(root)
    if plan is None:
        raise FileNotFoundError(f"{Path(root) / layout.PLAN_FILE}: no build plan (run make_plan first)")
    return plan


def save_plan(root: str | Path, plan: Plan) -> None:
    layout.atomic_write_bytes(Path(root) / layout.PLAN_FILE, json.dumps(asdict(plan), indent=1).encode())


def make_plan(cfg: AnnotateConfig) -> Plan:
    """Load OUTPUT/plan.json and add units for files not planned yet (creating it on the first run)."""
    if not cfg.input or not cfg.output:
        raise PlanError("set both `input` and `output`")
    uris, failures = list_sources(cfg.input, cfg.ingest)
    if not uris:
        reasons = "; ".join(str(f) for f in failures) or "no media files"
        raise PlanError(f"nothing to annotate in {cfg.input}: {reasons}")
    plan = load_plan(cfg.output) or _new_plan(cfg)
    planned = {uri for unit in plan.units for uri in unit.sources}
    new = [uri for uri in uris if uri not in planned]
    if new:
        duplicates = find_duplicates([*planned, *new]) if cfg.ingest.dedupe else {}
        size = cfg.out.sources_per_unit
        for start in range(0, len(new), size):
            chunk = new[start:start + size]
            unit_id = f"unit-{len(plan.units):05d}"
            plan.units.append(Unit(unit_id, chunk, {u: duplicates[u] for u in chunk if u in duplicates}))
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
        save_plan(cfg.output, plan)
        log.info("planned %d new files in %d units", len(new), -(-len(new) // size))
    return plan


def plan_or_report(cfg: AnnotateConfig, command: str) -> Plan | None:
    """`make_plan` for a command's `main`: the plan, or None once the reason is printed (exit with 2)."""
    try:
        return make_plan(cfg)
    except PlanError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return None


def _new_plan(cfg: AnnotateConfig) -> Plan:
    """An empty plan, refused where finished units exist: their ids would point at other files."""
    stats = layout.stats_files(Path(cfg.output))
    if stats:
        raise PlanError(f"{Path(cfg.output) / layout.PLAN_FILE}: missing, but {len(stats)} units are "
                        "finished "
                        f"(e.g. {stats[0].name}); restore the plan, or start over in an empty output folder")
    return Plan(cfg.input, [])


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
