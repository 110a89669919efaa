"""Trajectory drawing: boxes in the instance colour at the right place, only on frames they cover."""

import numpy as np

from instvl.datasets.draw import draw_trajectories
from instvl.datasets.records import Instance, Trajectory
from instvl.datasets.schema import InstanceRow
from instvl.geometry import instance_colour, to_pixels


def _instance(instance_id: int, frames: list[int], box: list[float]) -> InstanceRow:
    trajectory = Trajectory(frames, [box] * len(frames))
    return Instance(instance_id, "red square", "a red square", trajectory).to_row()


def test_box_drawn_in_instance_colour_on_covered_frames_only():
    frame = np.zeros((100, 200, 3), np.uint8)
    inst = _instance(1, [2, 3], [0.25, 0.5, 0.75, 0.9])
    drawn = np.asarray(draw_trajectories(frame, [inst], 3, labels=False))
    colour = instance_colour(1).rgb
    x0, _, _, y1 = to_pixels(inst["trajectory"]["box"][0], 200, 100)
    assert tuple(drawn[70, x0]) == colour      # left edge
    assert tuple(drawn[y1 - 1, 100]) == colour  # bottom edge: the box's last pixel row
    assert tuple(drawn[y1, 100]) == (0, 0, 0)   # ... and not one below it
    assert tuple(drawn[70, 100]) == (0, 0, 0)   # inside untouched
    untouched = np.asarray(draw_trajectories(frame, [inst], 4))
    assert not untouched.any()
    assert frame.sum() == 0  # the input frame is not modified


def test_label_above_the_box():
    frame = np.full((120, 160, 3), 255, np.uint8)
    row = _instance(0, [0], [0.3, 0.5, 0.6, 0.9]) | {"phrase": "dog"}
    with_label = np.asarray(draw_trajectories(frame, [row], 0))
    without = np.asarray(draw_trajectories(frame, [row], 0, labels=False))
    above_box = (slice(0, round(0.5 * 119) - 2), slice(round(0.3 * 159), round(0.6 * 159)))
    assert (with_label[above_box] != without[above_box]).any()
    assert (with_label[above_box] == instance_colour(0).rgb).all(axis=-1).sum() > 20
