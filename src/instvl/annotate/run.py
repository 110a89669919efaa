"""`instvl annotate run INPUT OUT`: the annotation pipeline in this process, without Prefect.

    instvl annotate run media/ out/corpus --config annotate/tiny

Plans the input into units (OUT/plan.json), runs every unit not done yet, and rebuilds the manifest.
`instvl build` runs the same units as a Prefect flow (retries, Ray, a server UI).
"""

import logging
import sys
from pathlib import Path
from typing import Any

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import PlanError, make_plan
from instvl.annotate.units import run_unit
from instvl.datasets.manifest import unit_done, write_manifest

__all__ = ["AnnotateConfig", "main", "summarize"]

log = logging.getLogger(__name__)


def main(cfg: AnnotateConfig) -> int:
    try:
        plan = make_plan(cfg)
    except PlanError as err:
        print(f"instvl annotate: {err}", file=sys.stderr)
        return 2
    pending = [u.unit_id for u in plan.units if not unit_done(cfg.output, u.unit_id)]
    log.info("%d units, %d to do", len(plan.units), len(pending))
    units = pending
    if sys.stderr.isatty():
        from tqdm import tqdm

        units = tqdm(pending, desc="units", unit="unit")
    for unit_id in units:
        run_unit(cfg, unit_id)
    manifest = write_manifest(cfg.output)
    print(summarize(manifest, Path(cfg.output)))
    return 0


def summarize(manifest: dict[str, Any], root: Path) -> str:
    """A few lines a person reads at the end of a build."""
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
