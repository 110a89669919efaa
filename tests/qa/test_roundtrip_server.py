"""The QC round trip against a real Label Studio server: push, review through the API, pull, report."""

import json
import logging

import pytest

from instvl.datasets.layout import PUSH_STATE_FILE
from instvl.qa.convert import BOX_NAME, parse_result
from instvl.qa.projects import config_labels, ensure_project
from instvl.qa.pull import PullConfig, pull_dataset
from instvl.qa.push import PushConfig, PushInterrupted, push_dataset
from instvl.qa.report import qc_report
from instvl.testing.datasets import rows_by_id
from instvl.testing.labelstudio import TEST_TOKEN, TEST_USER, reviewed_result


def task_index(client, projects: dict[str, int]) -> dict[str, list[int]]:
    """sample_id -> task ids over the projects of a push (any dataset, any prediction)."""
    index: dict[str, list[int]] = {}
    for project_id in projects.values():
        for (_dataset, sample_id, _fingerprint), ids in client.task_ids_by_key(project_id).items():
            index.setdefault(sample_id, []).extend(ids)
    return index


def pushed_tasks(root, url: str) -> dict[str, dict]:
    """sample_id -> the push state's record of its task."""
    tasks = json.loads((root / PUSH_STATE_FILE).read_text())["servers"][url]["tasks"]
    return {task["sample_id"]: task for task in tasks.values()}


def move_first_track(result: list[dict]) -> None:
    track = next(item for item in result if item["from_name"] == BOX_NAME)
    for key in track["value"]["sequence"]:
        key["x"] = max(0.0, key["x"] - 5.0)
    caption = next(i for i in result if i["from_name"] == "inst_caption" and i["id"] == track["id"])
    caption["value"]["text"] = ["a box moved by the reviewer"]


def test_project_get_or_create_is_idempotent(ls_server, qa_settings):
    client = PushConfig(root="unused", **qa_settings()).server.build()
    first = ensure_project(client, "idempotent-project", "video", {"red ball"}, 8.0)
    second = ensure_project(client, "idempotent-project", "video", {"red ball", 'blue "cube"'}, 8.0)
    assert first["id"] == second["id"]
    assert [p["title"] for p in client.projects()].count("idempotent-project") == 1
    assert config_labels(second["label_config"]) == {"red ball", 'blue "cube"'}


def test_push_twice_creates_each_task_once(make_synth, qa_settings, caplog):
    root = make_synth(num_samples=4)
    cfg = PushConfig(root=str(root), **qa_settings(push={"select": "all", "batch_size": 3}))
    caplog.set_level(logging.DEBUG)
    first = push_dataset(cfg)
    assert (first.pushed, first.no_media) == (4, [])
    assert push_dataset(cfg).pushed == 0
    (root / PUSH_STATE_FILE).unlink()  # state lost: the server itself must say the tasks exist
    third = push_dataset(cfg)
    assert (third.pushed, third.already_there) == (0, 4)
    client = cfg.server.build()
    index = task_index(client, first.projects)
    assert sorted(index) == sorted(rows_by_id(root)) and all(len(ids) == 1 for ids in index.values())
    task = client.task(next(iter(index.values()))[0])
    media_url = task["data"].get("video") or task["data"].get("image")
    response = client.get_media(media_url)
    assert response.status_code == 200 and response.headers["content-type"] in ("video/mp4", "image/jpeg")
    assert sorted(p.name for p in (root / "media").iterdir()) == sorted(
        f"{sid}{'.mp4' if r['media_type'] == 'video' else '.jpg'}" for sid, r in rows_by_id(root).items())
    assert TEST_TOKEN not in caplog.text
    assert TEST_TOKEN not in (root / PUSH_STATE_FILE).read_text()


def test_review_pull_merge_and_report(make_synth, qa_settings, tmp_path):
    from instvl.datasets.validate import validate_dataset

    root = make_synth(num_samples=6)
    rows = rows_by_id(root)
    videos = sorted(s for s, r in rows.items() if r["media_type"] == "video" and r["instances"])
    images = sorted(s for s, r in rows.items() if r["media_type"] == "image" and r["instances"])
    assert len(videos) >= 2 and len(images) >= 1, "seed must give both media types"
    sections = qa_settings(push={"select": "all"})
    pushed = push_dataset(PushConfig(root=str(root), **sections))
    state = pushed_tasks(root, sections["server"]["url"])
    client = PushConfig(root=str(root), **sections).server.build()
    plan = {videos[0]: ("accept", None), videos[1]: ("accept", move_first_track), images[0]: ("reject", None)}
    for sid, (choice, edit) in plan.items():
        task_id = state[sid]["task_id"]
        client.create_annotation(task_id, reviewed_result(client, task_id, choice, edit), lead_time=3.0)

    out = tmp_path / "reviewed"
    summary = pull_dataset(PullConfig(root=str(root), output=str(out), **sections))
    assert summary.statuses == {"accepted": 1, "corrected": 1, "rejected": 1}
    merged = rows_by_id(out)
    assert {s: merged[s]["qc"]["status"] for s in plan} == {
        videos[0]: "accepted", videos[1]: "corrected", images[0]: "rejected"}
    for sid in plan:
        assert merged[sid]["qc"]["reviewer"] == TEST_USER
        assert merged[sid]["qc"]["task_id"] == state[sid]["task_id"]
        assert merged[sid]["qc"]["reviewed_at"] is not None
    assert merged[videos[0]]["instances"] == rows[videos[0]]["instances"]
    corrected = merged[videos[1]]["instances"][0]
    original = rows[videos[1]]["instances"][0]
    assert corrected["caption"] == "a box moved by the reviewer"
    for old, new in zip(original["trajectory"]["box"], corrected["trajectory"]["box"], strict=True):
        assert new[0] == pytest.approx(max(0.0, old[0] - 0.05), abs=1e-4)
        assert new[3] == pytest.approx(old[3], abs=1e-4)
    assert merged[images[0]]["instances"] == rows[images[0]]["instances"]
    for sid in set(rows) - set(plan):
        assert merged[sid] == rows[sid], f"unreviewed {sid} changed"
    report = validate_dataset(out)
    assert report.ok, report.summary()

    overall = qc_report(out)[0]
    assert (overall["reviewed"], overall["rows"]) == (3, len(rows))
    assert overall["accepted"] == pytest.approx(1 / 3) and overall["rejected"] == pytest.approx(1 / 3)
    assert 0 < overall["box_iou"] < 1 and overall["caption_edits"] > 0
    assert pushed.pushed == len(rows)


def test_no_edit_round_trip_through_the_server(make_synth, qa_settings):
    root = make_synth(num_samples=4, seed=11)
    sections = qa_settings(push={"select": "all"})
    summary = push_dataset(PushConfig(root=str(root), **sections))
    client = PushConfig(root=str(root), **sections).server.build()
    rows = rows_by_id(root)
    for (task_id,) in task_index(client, summary.projects).values():
        client.create_annotation(task_id, reviewed_result(client, task_id, "accept"))
    exported = [t for pid in summary.projects.values() for t in client.export(pid, interpolate=True)]
    assert len(exported) == len(rows)
    for task in exported:
        row = rows[task["data"]["sample_id"]]
        parsed = parse_result(task["annotations"][0]["result"], row["num_frames"])
        assert parsed.global_caption == row["global_caption"]
        for inst in row["instances"]:
            region = parsed.regions[f"i{inst['instance_id']}"]
            assert region.caption == inst["caption"] and region.phrase == inst["phrase"]
            assert region.trajectory.frame_index == inst["trajectory"]["frame_index"]
            for old, new in zip(inst["trajectory"]["box"], region.trajectory.box, strict=True):
                assert new == pytest.approx(old, abs=0.005)


def test_push_resumes_after_the_server_dies(ls_server, make_synth, qa_settings):
    root = make_synth(num_samples=5, seed=2)
    cfg = PushConfig(root=str(root), **qa_settings(push={"select": "all", "batch_size": 1}))
    batches = []

    def kill_after_two(state):
        batches.append(len(state.tasks))
        if len(batches) == 2:
            ls_server.process.kill()
            ls_server.process.wait()

    with pytest.raises(PushInterrupted) as err:
        push_dataset(cfg, on_batch=kill_after_two)
    message = str(err.value)
    assert ls_server.url in message and "rerun" in message and TEST_TOKEN not in message
    state = json.loads((root / PUSH_STATE_FILE).read_text())
    tasks = state["servers"][ls_server.url]["tasks"]
    assert len(tasks) == 2
    # As if the reply to the last import had been lost: the task exists but the state does not know it.
    tasks.pop(sorted(tasks)[-1])
    (root / PUSH_STATE_FILE).write_text(json.dumps(state))

    ls_server.start()
    summary = push_dataset(cfg)
    assert (summary.pushed, summary.already_there) == (3, 2)
    client = cfg.server.build()
    index = task_index(client, summary.projects)
    assert len(index) == 5 and all(len(ids) == 1 for ids in index.values())


def test_cli_push_pull_report_with_the_qa_local_preset(make_synth, qa_settings, tmp_path, capsys):
    from instvl.cli import main as cli

    root, out = make_synth(num_samples=3, seed=4), tmp_path / "v2"
    server = qa_settings()["server"]
    sets = [arg for key, value in server.items() for arg in ("--set", f"server.{key}={value}")]
    assert cli(["qa", "push", str(root), *sets, "--set", "push.select=all"]) == 0
    assert "pushed 3" in capsys.readouterr().out
    assert cli(["qa", "pull", str(root), str(out), *sets]) == 0
    assert "reviewed 0" in capsys.readouterr().out
    assert cli(["qa", "report", str(out)]) == 0
    assert rows_by_id(out) == rows_by_id(root)
    assert cli(["qa", "pull", str(root), str(out), *sets]) == 1  # the version exists: refuse to mix
    assert "already written" in capsys.readouterr().err
    written = [p for folder in (root, out) for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in written if TEST_TOKEN.encode() in p.read_bytes()]
