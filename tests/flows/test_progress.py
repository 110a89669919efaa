"""The build progress bar's numbers: finished units from stats files, running ones from progress files."""

import json

from instvl.annotate.plan import make_plan
from instvl.annotate.units import run_unit
from instvl.datasets.layout import PROGRESS_DIR
from instvl.flows.progress import BuildProgress


def write_progress(root, unit_id: str, done: int, samples: int) -> None:
    (root / PROGRESS_DIR).mkdir(exist_ok=True)
    (root / PROGRESS_DIR / f"{unit_id}.json").write_text(
        json.dumps({"sources_done": done, "sources": 4, "samples": samples}))


def test_snapshot_counts_files_of_finished_and_running_units(synth_media, make_config, tmp_path):
    out = tmp_path / "corpus"
    cfg = make_config(synth_media(num_samples=6, image_fraction=0.4), out, "out.sources_per_unit=4")
    plan = make_plan(cfg)
    progress = BuildProgress(out, plan.num_sources, enabled=False)
    assert progress.snapshot() == (0, 0)

    stats = run_unit(cfg, "unit-00000")
    assert progress.snapshot() == (4, stats.rows)
    write_progress(out, "unit-00000", 4, stats.rows)  # not yet removed by its finished unit
    write_progress(out, "unit-00001", 1, 1)  # running: one of its two files done
    assert progress.snapshot() == (5, stats.rows + 1)


def test_leftover_progress_of_a_killed_run_is_cleared(tmp_path):
    write_progress(tmp_path, "unit-00003", 3, 3)
    with BuildProgress(tmp_path, 10, enabled=False) as progress:
        assert progress.snapshot() == (0, 0)
