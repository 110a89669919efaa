"""The state of one track while the trajectory builder builds it, and its motion guess.

A `LiveTrack` holds the frames a detection has vouched for (committed, in its `records.Instance`'s
trajectory) apart from the tentative ones the tracker added since the last confirmation, which a later
detection commits or the builder drops; the detector's confidences and label votes; its appearance; and
the constant-velocity guess of where it is on a frame it was not seen (`predicted_box`), from its recent
boxes or from confirmed ones only. The rules that change it live in `annotate.trajectories`.
"""

from dataclasses import dataclass, field

import numpy as np

from instvl.annotate.appearance import Look
from instvl.datasets.records import Instance, Trajectory, encode_rle
from instvl.geometry import Box, as_box, clip_boxes


@dataclass
class TrackFrame:
    """One tracked frame of a track, committed or tentative."""

    index: int
    box: Box
    tracker_score: float
    mask: np.ndarray | None


@dataclass
class LiveTrack:
    """A track being built: committed frames in `instance.trajectory`, tentative ones since the last
    confirmation, and the motion state used to predict it across misses."""

    instance: Instance
    last_box: Box  # the last confirming detection's box (at last_seen), for motion from confirmed boxes
    last_seen: int
    missed: int = 0
    pending: Box | None = None  # the tracker's box on the next keyframe (None: lost there)
    pending_mask: np.ndarray | None = None
    active: bool = True  # propagated by the tracker (False: lost, predicted by motion only)
    tentative: list[TrackFrame] = field(default_factory=list)
    unconfirmed: int = 0
    confirmations: int = 0
    det_score: float = 0.0
    det_scores: list[tuple[int, float]] = field(default_factory=list)  # (keyframe, confirming score or 0)
    votes: dict[str, float] = field(default_factory=dict)  # label -> summed detector confidence
    frame_scores: dict[int, float] = field(default_factory=dict)  # keyframe -> detector confidence
    look: Look | None = None  # `annotate.appearance` look of its confirming detections, averaged

    @property
    def trajectory(self) -> Trajectory:
        return self.instance.trajectory

    def append(self, frame: TrackFrame, keep_masks: bool) -> None:
        """Commit one frame: its box, its score (the detector's on a confirming keyframe, else the last
        confirming confidence times the tracker's score) and, with `keep_masks`, its mask."""
        trajectory = self.trajectory
        if trajectory.frame_index and frame.index <= trajectory.frame_index[-1]:
            return  # already committed (a backfilled frame overlapping a tracked one)
        trajectory.frame_index.append(frame.index)
        trajectory.box.append(list(frame.box))
        keyframe_score = self.frame_scores.get(frame.index)
        trajectory.score.append(keyframe_score if keyframe_score is not None
                                else self.det_score * min(max(frame.tracker_score, 0.0), 1.0))
        if keep_masks and frame.mask is not None:
            trajectory.mask_rle.append(encode_rle(frame.mask))

    def keyframe_score(self, redetect_every: int) -> float:
        """The mean detector confidence over the keyframes within the committed span, 0 where the
        detector did not confirm the track (`Instance.score`)."""
        first, last = self.trajectory.frame_index[0], self.trajectory.frame_index[-1]
        keyframes = range(-(-first // redetect_every) * redetect_every, last + 1, redetect_every)
        return float(np.mean([self.frame_scores.get(k, 0.0) for k in keyframes])) if len(keyframes) else 0.0

    def cut_back(self) -> int:
        """Remove the committed frames after the last confirming detection (a track confirmed on a
        keyframe commits the window's frames as the tracker gives them); how many were removed."""
        trajectory = self.trajectory
        keep = sum(1 for frame in trajectory.frame_index if frame <= self.last_seen)
        removed = len(trajectory.frame_index) - keep
        if removed:
            if len(trajectory.mask_rle) == len(trajectory.frame_index):
                del trajectory.mask_rle[keep:]
            del trajectory.frame_index[keep:], trajectory.box[keep:], trajectory.score[keep:]
        return removed

    def join(self, later: "LiveTrack") -> None:
        """Continue this finished track with `later`, a track of the same object that starts after it
        ends: frames, detector confidences, label votes and confirmations."""
        mine, theirs = self.trajectory, later.trajectory
        aligned = len(mine.mask_rle) == len(mine.frame_index) and \
            len(theirs.mask_rle) == len(theirs.frame_index)
        mine.mask_rle = mine.mask_rle + theirs.mask_rle if aligned else []
        mine.frame_index += theirs.frame_index
        mine.box += theirs.box
        mine.score += theirs.score
        self.frame_scores.update(later.frame_scores)
        self.det_scores += later.det_scores
        for label, vote in later.votes.items():
            self.votes[label] = self.votes.get(label, 0.0) + vote
        self.confirmations += later.confirmations
        self.last_box, self.last_seen = later.last_box, later.last_seen

    def predicted_box(self, sampled_index: int, growth: float, confirmed: bool = False) -> Box:
        """Constant-velocity guess from the track's last boxes (committed or tentative; `confirmed`: only
        those a detection vouched for), grown by `growth` of its size per frame since the last one."""
        frames, boxes = self.recent(confirmed=confirmed)
        gap = sampled_index - frames[-1]
        velocity = (boxes[-1] - boxes[0]) / (frames[-1] - frames[0]) if len(frames) > 1 else np.zeros(4)
        box = boxes[-1] + velocity * gap
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * (1 + growth * gap)
        return as_box(clip_boxes(np.concatenate([centre - half, centre + half]))[0])

    def velocity(self, keyframe: int) -> tuple[float, float] | None:
        """Per-frame motion of the box centre over the track's recent frames up to `keyframe` (None
        before the track has two)."""
        frames, boxes = self.recent()
        keep = frames <= keyframe
        frames, boxes = frames[keep], boxes[keep]
        if len(frames) < 2:
            return None
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        dx, dy = (centres[-1] - centres[0]) / (frames[-1] - frames[0])
        return float(dx), float(dy)

    def recent(self, history: int = 4, confirmed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices and boxes of the last `history` + 1 frames seen (the birth box before any);
        `confirmed`: committed frames and the last confirming detection only."""
        frames = list(self.trajectory.frame_index[-history - 1:])
        boxes = list(self.trajectory.box[-history - 1:])
        if confirmed:
            frames, boxes = frames + [self.last_seen], boxes + [list(self.last_box)]
        else:
            frames = frames + [f.index for f in self.tentative]
            boxes = boxes + [list(f.box) for f in self.tentative]
        if not frames:
            return np.array([self.last_seen]), np.array([self.last_box], float)
        unique, keep = np.unique(np.asarray(frames, int), return_index=True)  # sorted, each frame once
        return unique[-history - 1:], np.asarray(boxes, float)[keep][-history - 1:]
