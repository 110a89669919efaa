"""Trajectories <-> Label Studio results: frames, percent boxes, gaps, interpolation, reviewer edits."""

import copy

import pytest

from instvl.datasets.reader import read_table
from instvl.datasets.records import FrameSpace, Trajectory
from instvl.qa.convert import (
    interpolate_sequence,
    parse_result,
    percent_to_box,
    prediction_fingerprint,
    row_to_result,
    sequence_to_trajectory,
    trajectory_to_sequence,
)
from instvl.qa.merge import Review, merge_review


def track(frames, boxes) -> Trajectory:
    return Trajectory(list(frames), [list(b) for b in boxes])


def test_keyframes_are_one_based_percent_with_rotation_and_gaps_disabled():
    seq = trajectory_to_sequence(track([0, 1, 4], [[0.1, 0.2, 0.3, 0.6]] * 3), fps=10.0)
    assert [k["frame"] for k in seq] == [1, 2, 5]
    assert seq[0]["x"] == pytest.approx(10) and seq[0]["y"] == pytest.approx(20)
    assert seq[0]["width"] == pytest.approx(20) and seq[0]["height"] == pytest.approx(40)
    assert all(k["rotation"] == 0 for k in seq)
    # frame 2 is followed by a gap, frame 5 ends the track: both stop interpolation.
    assert [k["enabled"] for k in seq] == [True, False, False]
    assert [k["time"] for k in seq] == pytest.approx([0.1, 0.2, 0.5])


def test_interpolation_is_linear_stops_at_disabled_keys_and_holds_an_open_end():
    keys = [{"frame": 1, "x": 0, "y": 0, "width": 10, "height": 10, "rotation": 0, "enabled": True},
            {"frame": 5, "x": 40, "y": 0, "width": 10, "height": 10, "rotation": 0, "enabled": False},
            {"frame": 8, "x": 50, "y": 50, "width": 10, "height": 10, "rotation": 0, "enabled": True}]
    covered = interpolate_sequence(keys, frames_count=10)
    assert sorted(covered) == [1, 2, 3, 4, 5, 8, 9, 10]
    assert covered[3]["x"] == pytest.approx(20)
    assert covered[10]["x"] == pytest.approx(50)


def test_sequence_round_trip_reproduces_frames_and_boxes():
    frames = [0, 1, 2, 5, 6]
    boxes = [[0.1 + 0.01 * f, 0.2, 0.4 + 0.01 * f, 0.7] for f in frames]
    back = sequence_to_trajectory(trajectory_to_sequence(track(frames, boxes), 8.0), 8)
    assert back.space == FrameSpace.CLIP and back.frame_index == frames
    assert back.box == [pytest.approx(b, abs=1e-9) for b in boxes]
    assert back.score == [1.0] * len(frames) and back.mask_rle == []  # reviewed: score 1, no masks


def test_only_clip_frame_trajectories_become_label_studio_tracks():
    sampled = Trajectory([0, 1], [[0.1, 0.1, 0.2, 0.2]] * 2, space=FrameSpace.SAMPLED)
    with pytest.raises(ValueError, match="clip_frame"):
        trajectory_to_sequence(sampled, 8.0)


def test_percent_boxes_are_clipped_to_the_frame():
    assert percent_to_box({"x": -5, "y": 90, "width": 20, "height": 20}) == pytest.approx([0, 0.9, 0.15, 1.0])


@pytest.fixture
def synth_rows(make_synth):
    return read_table(make_synth(num_samples=4, seed=5, num_frames=6)).to_pylist()


def test_synth_rows_round_trip_through_results(synth_rows):
    assert {r["media_type"] for r in synth_rows} == {"image", "video"}
    for row in synth_rows:
        result = row_to_result(row)
        parsed = parse_result(result, row["num_frames"])
        assert parsed.global_caption == row["global_caption"] and parsed.verdict is None
        for inst in row["instances"]:
            region = parsed.regions[f"i{inst['instance_id']}"]
            assert (region.phrase, region.caption) == (inst["phrase"], inst["caption"])
            assert region.trajectory.frame_index == inst["trajectory"]["frame_index"]
            for old, new in zip(inst["trajectory"]["box"], region.trajectory.box, strict=True):
                assert new == pytest.approx(old, abs=0.005)
        kinds = {item["type"] for item in result}
        assert kinds == ({"videorectangle", "textarea"} if row["media_type"] == "video" else
                         {"rectanglelabels", "textarea"})


def review(row, result, verdict="accept"):
    extra = [{"id": "v", "from_name": "verdict", "to_name": "video", "type": "choices",
              "value": {"choices": [verdict]}}] if verdict else []
    return Review(row["sample_id"], 7, result + extra, "ann@example.com", None)


def test_merge_accepts_unchanged_corrects_edits_and_keeps_rejected(synth_rows):
    row = next(r for r in synth_rows if r["media_type"] == "video" and r["instances"])
    merged, entry = merge_review(row, review(row, row_to_result(row), "accept"), 0.005, ["audit: x"])
    assert merged["qc"]["status"] == "accepted" and merged["instances"] == row["instances"]
    assert merged["qc"]["route_reasons"] == ["audit: x"] and entry["status"] == "accepted"

    edited = row_to_result(row)
    edited[0]["value"]["sequence"][0]["y"] += 10  # one keyframe moved by 10 % of the height
    drawn = {"id": "newbox", "from_name": "box", "to_name": "video", "type": "videorectangle",
             "value": {"labels": ["thing"], "sequence": [
                 {"frame": 1, "x": 5, "y": 5, "width": 10, "height": 10, "rotation": 0, "enabled": False}]}}
    merged, entry = merge_review(row, review(row, edited + [drawn]), 0.005)
    assert merged["qc"]["status"] == "corrected"
    first = merged["instances"][0]["trajectory"]
    assert first["box"][0][1] == pytest.approx(row["instances"][0]["trajectory"]["box"][0][1] + 0.1, abs=1e-6)
    # Only the moved frame is new: the others keep the detector's box and score.
    original = row["instances"][0]["trajectory"]
    assert first["score"] == [1.0] + original["score"][1:] and first["box"][1:] == original["box"][1:]
    new = merged["instances"][-1]
    assert new["instance_id"] == max(i["instance_id"] for i in row["instances"]) + 1
    assert new["phrase"] == "thing"

    merged, _ = merge_review(row, review(row, edited, "reject"), 0.005)
    assert merged["qc"]["status"] == "rejected" and merged["instances"] == row["instances"]


def test_removing_a_region_removes_the_instance(synth_rows):
    row = next(r for r in synth_rows if r["instances"])
    kept = [item for item in row_to_result(row) if item["id"] != f"i{row['instances'][0]['instance_id']}"]
    merged, entry = merge_review(row, review(row, kept), 0.005)
    assert merged["qc"]["status"] == "corrected"
    assert len(merged["instances"]) == len(row["instances"]) - 1
    assert entry["instances"][0]["boxes_after"] is None


def test_strided_tracks_interpolate_across_their_span():
    """F3: every keyframe of a strided track was `enabled: false`, so boxes showed on 8 of 46 frames."""
    frames = [0, 6, 13, 19, 26, 32, 39, 45]
    seq = trajectory_to_sequence(track(frames, [[0.1, 0.1, 0.3, 0.3]] * len(frames)), fps=8.0)
    assert [k["enabled"] for k in seq] == [True] * 7 + [False]
    covered = interpolate_sequence(seq, frames_count=46)
    assert sorted(covered) == list(range(1, 47))
    # What the interpolated export gives back (in-between frames marked auto): the same keyframes.
    exported = [dict(box, frame=f, auto=f - 1 not in frames) for f, box in covered.items()]
    back = sequence_to_trajectory(exported, 46)
    assert back.frame_index == frames and back.box == [pytest.approx([0.1, 0.1, 0.3, 0.3])] * len(frames)


def test_the_fingerprint_follows_what_a_reviewer_judges(synth_rows):
    row = next(r for r in synth_rows if r["media_type"] == "video" and r["instances"])
    rescored = copy.deepcopy(row)
    rescored["instances"][0]["score"] = 0.01
    rescored["instances"][0]["trajectory"]["score"] = [0.01] * len(row["instances"][0]["trajectory"]["score"])
    moved = copy.deepcopy(row)
    moved["instances"][0]["trajectory"]["box"][0][0] += 0.01
    recaptioned = dict(row, global_caption="another caption")
    assert prediction_fingerprint(rescored) == prediction_fingerprint(row)
    assert len({prediction_fingerprint(r) for r in (row, moved, recaptioned)}) == 3
