"""A track under construction: its constant-velocity guess and the cut back to its last confirmation."""

import numpy as np
import pytest

from instvl.annotate.live_track import LiveTrack, TrackFrame
from instvl.datasets.records import FrameSpace, Instance, Trajectory


def moving_track(frames: int = 5, step: float = 0.05) -> LiveTrack:
    """A track committed on frames 0..frames-1, moving right by `step` per frame, confirmed on frame 2."""
    boxes = [[0.1 + step * t, 0.2, 0.3 + step * t, 0.4] for t in range(frames)]
    trajectory = Trajectory(frame_index=list(range(frames)), box=boxes, score=[0.9] * frames,
                            space=FrameSpace.SAMPLED)
    return LiveTrack(Instance(0, "red square", "", trajectory), last_box=tuple(boxes[2]), last_seen=2)


def test_the_motion_guess_continues_the_velocity_and_grows_with_the_gap():
    track = moving_track()
    guess = np.array(track.predicted_box(6, growth=0.0))
    assert guess == pytest.approx([0.4, 0.2, 0.6, 0.4], abs=1e-6)
    grown = np.array(track.predicted_box(6, growth=0.1))
    assert (grown[2] - grown[0]) == pytest.approx(0.2 * 1.2, abs=1e-6)  # two frames since the last box
    track.tentative.append(TrackFrame(5, (0.9, 0.2, 1.0, 0.4), 1.0, None))  # the tracker ran off
    assert track.predicted_box(6, 0.0)[0] > 0.5  # the guess follows the tentative frames ...
    assert track.predicted_box(6, 0.0, confirmed=True)[0] == pytest.approx(0.4, abs=1e-6)  # ... or not
    assert track.velocity(4) == pytest.approx((0.05, 0.0), abs=1e-6)


def test_cut_back_removes_committed_frames_after_the_last_confirmation():
    track = moving_track()
    assert track.cut_back() == 2
    assert track.trajectory.frame_index == [0, 1, 2] and len(track.trajectory.box) == 3
    assert len(track.trajectory.score) == 3
    assert track.cut_back() == 0
