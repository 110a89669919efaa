"""`instvl annotate run INPUT OUT`: the annotation pipeline in this process, without Prefect.

    instvl annotate run media/ out/corpus --config annotate/tiny

Plans the input into units (OUT/plan.json), runs every unit not done yet back to back through one
engine (a unit that fails does not stop the others; the command then exits 1 naming it), and rebuilds
the manifest.
`instvl build` runs the same units as a Prefect flow (retries, Ray, a server UI).
"""

import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import model_validator

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.plan import PlanError, output_root, plan_or_report
from instvl.annotate.units import UnitsFailed, run_units
from instvl.datasets.manifest import summarize, unit_done, write_manifest
from instvl.datasets.writer import RootBusyError, lock_root

log = logging.getLogger(__name__)


class AnnotateRunConfig(AnnotateConfig):
    """The annotation config of `instvl annotate run`.

    The `annotate/*` presets are shared with `instvl build`, whose `flow:` section (Prefect runner,
    retries) means nothing in this process: it is dropped here rather than rejected, so every preset
    runs with both commands.
    """

    @model_validator(mode="before")
    @classmethod
    def _drop_flow_section(cls, data: Any) -> Any:
        if isinstance(data, dict) and "flow" in data:
            log.debug("annotate run: ignoring the preset's flow section (used by instvl build)")
            return {key: value for key, value in data.items() if key != "flow"}
        return data


def main(cfg: AnnotateConfig) -> int:
    try:
        root = output_root(cfg)
        with lock_root(root):  # one build per output root
            return _main(cfg, root)
    except (PlanError, RootBusyError) as err:
        print(f"instvl annotate: {err}", file=sys.stderr)
        return 2


def _main(cfg: AnnotateConfig, root: Path) -> int:
    cfg.check_weights()  # a missing checkpoint fails now, naming the model, not in the first unit
    plan = plan_or_report(cfg, "instvl annotate")
    if plan is None:
        return 2
    pending = [u.unit_id for u in plan.units if not unit_done(root, u.unit_id)]
    log.info("%d units, %d to do", len(plan.units), len(pending))
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc="units", unit="unit")
    try:  # back to back through one engine: the models do not drain between units
        run_units(cfg, pending, finished=lambda _: bar.update() if bar is not None else None)
    except UnitsFailed as err:  # the other units are written; a rerun redoes these
        write_manifest(root)
        for unit_id, error in err.failures.items():
            print(f"instvl annotate: FAILED {unit_id}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    manifest = write_manifest(root)
    print(summarize(manifest, root))
    return 0
