"""Tracklet stitching: join a finished track to an earlier one of the same object after the clip ends.

The trajectory builder decides online, keyframe by keyframe, and an object lost for longer than a lost
track waits (an occlusion, a trip outside the frame), or re-detected while the tracker still followed
its old track somewhere else, comes back as a new track. With the whole clip built, a track that starts
after another ended, looks like it (`annotate.appearance`) and starts near where that one was last
confirmed or expected by its motion continues it: one identity instead of two.
"""

import numpy as np

from instvl.annotate.appearance import look_similarity
from instvl.annotate.live_track import LiveTrack


def stitch(finished: list[LiveTrack], similarity: float, distance: float, max_gap: int,
           size_weight: float) -> tuple[list[LiveTrack], int]:
    """The tracks left after joining each later track to the earlier one it continues, and how many
    were joined. A pair qualifies when the later track starts within `max_gap` frames after the earlier
    one's last frame, its look matches at least `similarity` (`appearance.look_similarity` with
    `size_weight`), and its first box lies within `distance` of the earlier one's box sizes from its last
    confirmed box or its motion guess. Greedy, most similar pair first; each track continues at most one
    and is continued by at most one, chains in time order."""
    tracks = sorted((t for t in finished if t.trajectory.frame_index and t.look is not None),
                    key=lambda t: t.trajectory.frame_index[0])
    pairs = []
    for a in tracks:
        end = a.trajectory.frame_index[-1]
        last = np.asarray(a.last_box, float)
        size = max(last[2] - last[0], last[3] - last[1], 1e-6)
        for b in tracks:
            start = b.trajectory.frame_index[0]
            if start <= end or start - end > max_gap:
                continue
            first = np.asarray(b.trajectory.box[0], float)
            anchors = np.array([last, a.predicted_box(start, 0.0, confirmed=True)])
            centres = (anchors[:, :2] + anchors[:, 2:]) / 2
            away = np.linalg.norm(centres - (first[:2] + first[2:]) / 2, axis=1).min() / size
            assert a.look is not None and b.look is not None
            alike = look_similarity(a.look, b.look, size_weight)
            if away <= distance and alike >= similarity:
                pairs.append((alike, a, b))
    joined: dict[int, LiveTrack] = {}  # id of a later track -> the earlier track it continues
    tails: set[int] = set()
    for _, a, b in sorted(pairs, key=lambda p: -p[0]):
        if id(a) not in tails and id(b) not in joined:
            tails.add(id(a))
            joined[id(b)] = a
    for b in sorted((t for t in tracks if id(t) in joined), key=lambda t: t.trajectory.frame_index[0]):
        a = joined[id(b)]
        while id(a) in joined:  # a itself continued an earlier track and is part of it now
            a = joined[id(a)]
        a.join(b)
    return [t for t in finished if id(t) not in joined], len(joined)
