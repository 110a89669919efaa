"""End-to-end corpus builds under a Prefect test server: fake and tiny-model presets, run logs, progress."""

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.annotate import plan as plan_module
from instvl.annotate.plan import load_plan
from instvl.datasets.reader import read_table
from instvl.datasets.validate import validate_dataset
from instvl.flows.build_corpus import build_corpus, main
from instvl.flows.progress import BuildProgress


def run_logs(flow_run_id: str, wanted: str, timeout_s: float = 20.0) -> list:
    """The run's API log records, polled until one from logger `wanted` arrives (logs are batched)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])))
            if any(log.name == wanted for log in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)


def media_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


def check_dataset(root: Path, cfg, num_inputs: int) -> list[dict]:
    """Assertions every finished build must satisfy; returns the rows (without media)."""
    report = validate_dataset(root)
    assert report.ok, report.summary()
    manifest = json.loads((root / "manifest.json").read_text())
    rows = read_table(root, columns=["sample_id", "media_type", "source", "provenance"]).to_pylist()
    assert manifest["num_rows"] == len(rows) >= 1
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for row in rows:
        assert {kv["key"]: kv["value"] for kv in row["provenance"]["models"]} == cfg.model_ids()
    plan = load_plan(root)
    assert sorted(uri for unit in plan.units for uri in unit.sources) == media_files(Path(cfg.input))
    stats = {u["unit_id"]: u for u in manifest["units"]}
    assert sorted(stats) == [u.unit_id for u in plan.units]
    assert sum(u["sources"] for u in stats.values()) == num_inputs
    return rows


def test_fake_build_writes_valid_shards_and_library_logs(prefect_harness, synth_media, make_config, tmp_path):
    media = synth_media(num_samples=6, image_fraction=0.4)
    out = tmp_path / "corpus"
    cfg = make_config(media, out, "out.sources_per_unit=4")
    summary = build_corpus(cfg)
    assert summary["failed"] == {} and summary["planned"] == summary["ran"] == 2
    rows = check_dataset(out, cfg, num_inputs=6)
    assert {r["media_type"] for r in rows} == {"image", "video"}
    assert {Path(r["source"]["uri"]).name for r in rows} == {p.name for p in media.iterdir()}
    assert [u.unit_id for u in load_plan(out).units] == ["unit-00000", "unit-00001"]
    assert [len(u.sources) for u in load_plan(out).units] == [4, 2]
    assert BuildProgress(out, 6, enabled=False).snapshot() == (6, len(rows))

    logs = run_logs(summary["flow_run_id"], "instvl.annotate.units")
    annotating = [log for log in logs if "unit-00001: annotating 2 files" in log.message]
    assert annotating, [(log.name, log.message) for log in logs]
    assert annotating[0].name == "instvl.annotate.units"
    assert annotating[0].task_run_id is not None  # attributed to the unit's task run

    again = build_corpus(cfg)  # done units are filtered out before mapping
    assert again["ran"] == 0 and again["manifest"]["num_rows"] == len(rows)


def test_main_lists_the_input_once_prints_summary_and_exits_zero(prefect_harness, synth_media, make_config,
                                                                  tmp_path, capsys, monkeypatch):
    media = synth_media(num_samples=6, image_fraction=0.4)
    listings = []
    real_list = plan_module.list_sources
    monkeypatch.setattr(plan_module, "list_sources", lambda *a: listings.append(a) or real_list(*a))
    assert main(make_config(media, tmp_path / "corpus", "out.sources_per_unit=3", "flow.retries=0")) == 0
    assert len(listings) == 1  # main plans; the flow reads plan.json (an S3 prefix is listed once)
    printed = capsys.readouterr().out
    assert "samples" in printed and "quarantined inputs: 0" in printed


def test_main_reports_missing_input(make_config, tmp_path, capsys):
    assert main(make_config(tmp_path / "nothing-here", tmp_path / "corpus")) == 2
    assert "nothing-here" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_build_records_models(prefect_harness, synth_media, make_config, tmp_path):
    media = synth_media(num_samples=2, image_fraction=0.5, seed=0, num_frames=6)  # one image, one video
    out = tmp_path / "corpus"
    cfg = make_config(media, out, preset="annotate/tiny")
    summary = build_corpus(cfg)
    assert summary["failed"] == {} and summary["planned"] == 1
    rows = check_dataset(out, cfg, num_inputs=2)
    assert {r["media_type"] for r in rows} == {"image", "video"}
    assert all(cfg.model_ids()[role].endswith("tiny-random") for role in ("detector", "tracker", "captioner"))
    metadata = pq.read_schema(out / summary["manifest"]["shards"][0]["path"]).metadata
    assert json.loads(metadata[b"instvl.config"])["detector"]["kind"] == "hf"
