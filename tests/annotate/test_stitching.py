"""Tracklet stitching: a later track continues an earlier lookalike near where it was expected, only."""

import numpy as np
import pytest

from instvl.annotate.appearance import Look
from instvl.annotate.live_track import LiveTrack
from instvl.annotate.stitching import stitch
from instvl.datasets.records import FrameSpace, Instance, Trajectory


def track(iid: int, frames: range, x: float, colour: int, size: float = 12.0) -> LiveTrack:
    """A still track at left edge `x` on `frames`, confirmed on its last frame, of one flat colour and
    `size` pixels."""
    box = [x, 0.4, x + 0.1, 0.5]
    trajectory = Trajectory(frame_index=list(frames), box=[box] * len(frames), score=[0.8] * len(frames),
                            space=FrameSpace.SAMPLED)
    live = LiveTrack(Instance(iid, "square", "", trajectory), last_box=tuple(box), last_seen=frames[-1],
                     confirmations=2, votes={"square": 1.6})
    live.look = Look(np.eye(8 ** 3)[colour], float(np.log(size)))
    return live


@pytest.mark.parametrize(("later", "joined"), [
    (track(1, range(12, 20), 0.12, colour=5), True),    # same looks, close by, after a gap
    (track(1, range(12, 20), 0.12, colour=9), False),   # looks unlike it
    (track(1, range(12, 20), 0.12, colour=5, size=24.0), False),  # the same colour, twice as large
    (track(1, range(12, 20), 0.60, colour=5), False),   # too far from where it was
    (track(1, range(8, 20), 0.12, colour=5), False),    # overlaps it in time
    (track(1, range(40, 48), 0.12, colour=5), False),   # starts too late
])
def test_a_later_track_continues_an_earlier_lookalike_that_ended_near_it(later, joined):
    earlier = track(0, range(0, 10), 0.1, colour=5)
    kept, count = stitch([earlier, later], similarity=0.8, distance=2.0, max_gap=16, size_weight=0.5)
    assert count == joined and len(kept) == 2 - joined
    if joined:
        assert kept == [earlier]
        assert earlier.trajectory.frame_index == list(range(10)) + list(range(12, 20))
        assert len(earlier.trajectory.box) == len(earlier.trajectory.score) == 18
        assert earlier.confirmations == 4 and earlier.votes == {"square": 3.2}


def test_chains_join_in_time_order():
    first, second, third = (track(i, range(10 * i, 10 * i + 6), 0.1, colour=3) for i in range(3))
    kept, count = stitch([third, first, second], similarity=0.8, distance=2.0, max_gap=8, size_weight=0.5)
    assert count == 2 and kept == [first]
    assert first.trajectory.frame_index == [f for t in range(3) for f in range(10 * t, 10 * t + 6)]
