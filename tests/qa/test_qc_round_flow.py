"""The QC round as Prefect flows (embedded server) against the session's real Label Studio server."""

import json

import pytest

from instvl.datasets.layout import PUSH_STATE_FILE
from instvl.flows.qc_round import run_qc_round
from instvl.qa.push import PushConfig
from instvl.qa.round import QCRoundConfig
from instvl.testing.datasets import rows_by_id
from instvl.testing.labelstudio import reviewed_result


def test_push_then_pull_round(prefect_harness, make_synth, qa_settings, tmp_path):
    root = make_synth(num_samples=4, seed=11)
    sections = qa_settings(push={"select": "all"})
    pushed = run_qc_round(QCRoundConfig(stage="push", root=str(root), retry_delay_s=0, **sections))
    assert pushed["pushed"] == 4
    again = run_qc_round(QCRoundConfig(stage="push", root=str(root), retry_delay_s=0, **sections))
    assert (again["pushed"], again["already_there"]) == (0, 4)

    state = json.loads((root / PUSH_STATE_FILE).read_text())["servers"][sections["server"]["url"]]["tasks"]
    tasks = {task["sample_id"]: task for task in state.values()}
    accepted = sorted(tasks)[0]
    client = PushConfig(root=str(root), **sections).server.build()
    task_id = tasks[accepted]["task_id"]
    client.create_annotation(task_id, reviewed_result(client, task_id, "accept"), lead_time=1.0)

    out = tmp_path / "v2"
    pulled = run_qc_round(QCRoundConfig(stage="pull", root=str(root), output=str(out), **sections))
    assert pulled["statuses"] == {"accepted": 1}
    merged = rows_by_id(out)
    assert merged[accepted]["qc"]["status"] == "accepted"
    assert sum(r["qc"]["status"] == "auto" for r in merged.values()) == 3
    assert (out / "qa" / "report.html").is_file()


def test_pull_stage_needs_an_output(make_synth, qa_settings):
    with pytest.raises(ValueError, match="needs an output"):
        run_qc_round(QCRoundConfig(stage="pull", root="unused", **qa_settings()))
