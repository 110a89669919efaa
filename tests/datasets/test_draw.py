"""Trajectory drawing: boxes in the instance colour at the right place, only on frames they cover."""

import numpy as np

from instvl.datasets.draw import PALETTE, box_at, draw_trajectories, instance_hex
from instvl.datasets.records import Instance, Trajectory


def _instance(instance_id: int, frames: list[int], box: list[float]) -> Instance:
    return Instance(instance_id, "red square", "a red square", Trajectory(frames, [box] * len(frames)))


def test_box_drawn_in_instance_colour_on_covered_frames_only():
    frame = np.zeros((100, 200, 3), np.uint8)
    inst = _instance(1, [2, 3], [0.25, 0.5, 0.75, 0.9])
    drawn = np.asarray(draw_trajectories(frame, [inst], 3, labels=False))
    colour = PALETTE[1]
    assert tuple(drawn[70, round(0.25 * 199)]) == colour  # left edge
    assert tuple(drawn[round(0.9 * 99), 100]) == colour   # bottom edge
    assert tuple(drawn[70, 100]) == (0, 0, 0)             # inside untouched
    untouched = np.asarray(draw_trajectories(frame, [inst], 4))
    assert not untouched.any()
    assert frame.sum() == 0  # the input frame is not modified


def test_label_and_row_dicts():
    frame = np.full((120, 160, 3), 255, np.uint8)
    row = {"instance_id": 0, "phrase": "dog", "trajectory": {"frame_index": [0], "box": [[0.3, 0.5, 0.6, 0.9]]}}
    with_label = np.asarray(draw_trajectories(frame, [row], 0))
    without = np.asarray(draw_trajectories(frame, [row], 0, labels=False))
    above_box = (slice(0, round(0.5 * 119) - 2), slice(round(0.3 * 159), round(0.6 * 159)))
    assert (with_label[above_box] != without[above_box]).any()
    assert (with_label[above_box] == PALETTE[0]).all(axis=-1).sum() > 20


def test_box_at_and_hex():
    inst = _instance(13, [5, 9], [0.1, 0.2, 0.3, 0.4])
    assert box_at(inst, 9) == [0.1, 0.2, 0.3, 0.4]
    assert box_at(inst, 6) is None
    assert instance_hex(13) == instance_hex(1) == "#3cb44b"
