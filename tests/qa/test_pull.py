"""`qa pull` against a real Label Studio: reviews land only in the row their task was pushed as.

Each test reproduces a failure seen when reviewing with a real server: reviews leaking between
datasets that share clips; a second pull from a reviewed version flipping corrections to accepted and
dropping the review history; a clip without fps crashing push and pull; a submit without a verdict
merged as accepted.
"""

import json
from pathlib import Path

import pytest

from instvl.datasets.layout import REVIEWS_FILE
from instvl.qa.convert import BOX_NAME
from instvl.qa.pull import PullConfig, pull_dataset
from instvl.qa.push import PushConfig, push_dataset
from instvl.testing.datasets import make_sample, rows_by_id, write_dataset
from instvl.testing.labelstudio import reviewed_result


@pytest.fixture
def dataset_dir(tmp_path_factory, request):
    """Folders for dataset roots, outside the server's review-media root."""
    base = tmp_path_factory.getbasetemp() / "datasets" / request.node.name
    return lambda name: base / name


def samples(count: int = 3, shift: float = 0.0, **kwargs):
    """Strided video samples with media; `shift` moves every box right (another annotation of the clips)."""
    made = [make_sample(i, with_media=True, keyframe_every=2, **kwargs) for i in range(count)]
    for sample in made:
        for inst in sample.instances:
            inst.trajectory.box = [[b[0] + shift, b[1], b[2] + shift, b[3]] for b in inst.trajectory.box]
    return made


def push(root: Path, sections: dict) -> dict[str, int]:
    """Push every sample; returns sample_id -> task id of this push."""
    summary = push_dataset(PushConfig(root=str(root), **sections))
    state = json.loads((root / "qa" / "push_state.json").read_text())["servers"][sections["server"]["url"]]
    assert summary.pushed + summary.already_there == summary.selected
    return {t["sample_id"]: t["task_id"] for t in state["tasks"].values()}


def review(sections: dict, task_id: int, choice: str | None, edit=None) -> None:
    client = PushConfig(root="unused", **sections).server.build()
    result = reviewed_result(client, task_id, choice or "accept", edit)
    if choice is None:
        result = [item for item in result if item["from_name"] != "verdict"]
    client.create_annotation(task_id, result)


def move_one_keyframe(result: list[dict]) -> None:
    """Move the second keyframe of the first track down by 10 % of the height."""
    track = next(item for item in result if item["from_name"] == BOX_NAME)
    track["value"]["sequence"][1]["y"] += 10


def test_datasets_sharing_clips_get_their_own_tasks_and_reviews(dataset_dir, qa_settings):
    """The same clips annotated twice; before, the second push found 'already there' and the pull
    wrote the first dataset's instances into the second."""
    sections = qa_settings(push={"select": "all"})
    first = write_dataset(dataset_dir("a"), samples())
    second = write_dataset(dataset_dir("b"), samples(shift=0.1))
    tasks_a = push(first, sections)
    for task_id in tasks_a.values():
        review(sections, task_id, "accept", move_one_keyframe)
    summary = push_dataset(PushConfig(root=str(second), **sections))
    assert (summary.pushed, summary.already_there) == (3, 0)
    out = dataset_dir("b2")
    pulled = pull_dataset(PullConfig(root=str(second), output=str(out), **sections))
    assert pulled.reviewed == 0 and pulled.mismatched == []
    assert rows_by_id(out) == rows_by_id(second)  # dataset a's corrections stay out of b
    # The same rows written again (same predictions) into a new root: a dataset of its own.
    third = write_dataset(dataset_dir("c"), samples())
    assert push_dataset(PushConfig(root=str(third), **sections)).pushed == 3


def test_a_second_pull_keeps_corrections_and_the_review_history(dataset_dir, qa_settings):
    """`qa pull v2 v3` used to re-merge v2's reviews against corrected rows (corrected -> accepted)
    and drop v2's review log. Also: a corrected track keeps scores and masks where no box moved."""
    sections = qa_settings(push={"select": "all"})

    def with_masks(_: int, row: dict) -> None:
        for inst in row["instances"]:
            track = inst["trajectory"]
            track["mask_rle"] = [f"rle-{k}" for k in range(len(track["frame_index"]))]
            track["score"] = [0.7] * len(track["frame_index"])

    root = write_dataset(dataset_dir("v1"), samples(), mutate=with_masks)
    tasks = push(root, sections)
    ids = sorted(tasks)
    review(sections, tasks[ids[0]], "accept")
    review(sections, tasks[ids[1]], "accept", move_one_keyframe)
    v2, v3 = dataset_dir("v2"), dataset_dir("v3")
    first = pull_dataset(PullConfig(root=str(root), output=str(v2), **sections))
    assert first.statuses == {"accepted": 1, "corrected": 1}
    corrected = rows_by_id(v2)[ids[1]]["instances"][0]["trajectory"]
    original = rows_by_id(root)[ids[1]]["instances"][0]["trajectory"]
    assert corrected["box"][1] != original["box"][1]
    assert corrected["score"] == [original["score"][0], 1.0] + original["score"][2:]
    assert corrected["mask_rle"] == ["rle-0", ""] + original["mask_rle"][2:]

    review(sections, tasks[ids[2]], "reject")  # a later review, picked up from the reviewed version
    second = pull_dataset(PullConfig(root=str(v2), output=str(v3), **sections))
    assert (second.reviewed, second.kept, second.statuses) == (1, 2, {"rejected": 1})
    before, after = rows_by_id(v2), rows_by_id(v3)
    assert {s: r["qc"]["status"] for s, r in after.items()} == {
        ids[0]: "accepted", ids[1]: "corrected", ids[2]: "rejected"}
    assert after[ids[1]] == before[ids[1]] and after[ids[0]] == before[ids[0]]
    history = [json.loads(line) for line in (v3 / REVIEWS_FILE).read_text().splitlines()]
    assert [(e["sample_id"], e["status"]) for e in history] == [
        (ids[0], "accepted"), (ids[1], "corrected"), (ids[2], "rejected")]


def test_clips_without_fps_and_submits_without_verdict(dataset_dir, qa_settings):
    """A row with a null fps crashed push and pull (float(None)); a submit without accept/reject merged
    as accepted."""
    sections = qa_settings(push={"select": "all"})

    def no_fps(position: int, row: dict) -> None:
        if position == 0:
            row["fps"] = None

    root = write_dataset(dataset_dir("nofps"), samples(2), mutate=no_fps)
    tasks = push(root, sections)
    assert len(tasks) == 2
    first, second = sorted(tasks)
    review(sections, tasks[first], "accept")
    review(sections, tasks[second], None)
    out = dataset_dir("nofps-v2")
    summary = pull_dataset(PullConfig(root=str(root), output=str(out), **sections))
    assert summary.statuses == {"accepted": 1} and summary.no_verdict == [second]
    assert rows_by_id(out)[second]["qc"]["status"] == "auto"
