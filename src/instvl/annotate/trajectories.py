"""Trajectory builder: keyframe detections + windowed tracking -> identity-stable instance trajectories.

The video is consumed as a stream in windows of `redetect_every + 1` frames; consecutive windows share
one frame, the next keyframe. On each keyframe the detector runs and its boxes are matched (Hungarian,
box IoU, class-aware) to where the live tracks are predicted to be: the tracker's output for that frame
from the previous window, or a constant-velocity guess for a track that is currently lost. The tracker
is then re-seeded with matched detections, with its own boxes for tracks the detector missed, and with
unmatched detections as new tracks, and run over the window with fresh state. Tracks lost for more than
`max_missed` frames end; tracks that are too short or too small are dropped; ids are renumbered
0..K-1 in order of first appearance. At most one window of frames is held in memory.

A finished track is an uncaptioned `records.Instance` whose trajectory counts sampled indices
(`FrameSpace.SAMPLED`, positions in `frames`); `Trajectory.to_clip_frames` maps it for the shard.
"""

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from instvl.annotate.detect.base import Detector
from instvl.annotate.track.base import Tracker, box_mask
from instvl.annotate.tracks import Detection, TrackedFrame, TrackedObject, TrackSeed
from instvl.config import BaseConfig
from instvl.datasets.records import FrameSpace, Instance, Trajectory
from instvl.deps import require
from instvl.geometry import Box, as_box, box_iou, clip_boxes

log = logging.getLogger(__name__)


class TrajectoryConfig(BaseConfig):
    """How detections and tracker output become trajectories."""

    redetect_every: int = 8
    """Frames between keyframe detections; a tracker window holds redetect_every + 1 frames."""
    match_iou: float = 0.3
    """Minimum box IoU between a detection and a track's predicted box to continue that track."""
    duplicate_iou: float = 0.6
    """An unmatched detection overlapping a tracked object this much starts no new track."""
    lost_growth: float = 0.05
    """A lost track's predicted box grows by this fraction of its size per frame since last seen."""
    class_aware: bool = True
    """Only match detections to tracks of the same phrase."""
    max_missed: int = 8
    """Consecutive frames a track may be lost (occluded, undetected) before it ends."""
    min_score: float = 0.0
    """Per-frame tracker score below which the object counts as lost on that frame."""
    min_frames: int = 3
    """Tracks with fewer frames are dropped (clips shorter than this need a track on every frame)."""
    min_area: float = 0.0005
    """Tracks whose mean normalised box area is smaller are dropped."""
    max_tracks: int = 64
    """At most this many objects are tracked at once (the best-scoring detections win)."""
    keep_masks: bool = False
    """Store a COCO RLE mask per frame (the tracker's mask, or the box when it has none)."""

    def build(self, detector: Detector, tracker: Tracker) -> "TrajectoryBuilder":
        return TrajectoryBuilder(self, detector, tracker)


@dataclass
class _LiveTrack:
    """A track being built, with the motion state used to predict it across misses."""

    instance: Instance
    last_box: Box
    last_seen: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    missed: int = 0
    pending: Box | None = None  # the tracker's box on the next keyframe (None: lost there)

    @property
    def trajectory(self) -> Trajectory:
        return self.instance.trajectory

    def predicted_box(self, sampled_index: int, growth: float) -> Box:
        """The tracker's box on this keyframe, or for a lost track its constant-velocity guess, grown by
        `growth` of its size per frame since it was last seen (the guess gets less certain)."""
        if self.pending is not None:
            return self.pending
        gap = sampled_index - self.last_seen
        box = np.asarray(self.last_box) + self.velocity * gap
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * (1 + growth * gap)
        return as_box(clip_boxes(np.concatenate([centre - half, centre + half]))[0])

    def update_velocity(self, history: int = 4) -> None:
        """Mean per-frame box motion over the last `history` recorded frames."""
        frames, boxes = self.trajectory.frame_index[-history - 1:], self.trajectory.box[-history - 1:]
        if len(frames) > 1:
            self.velocity = (np.asarray(boxes[-1]) - np.asarray(boxes[0])) / (frames[-1] - frames[0])


class TrajectoryBuilder:
    """Runs a detector and a tracker over a stream of frames and returns the finished tracks."""

    def __init__(self, config: TrajectoryConfig, detector: Detector, tracker: Tracker):
        if config.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {config.redetect_every}")
        self.config, self.detector, self.tracker = config, detector, tracker
        self.stats: dict[str, int] = {}

    def build(self, frames: Iterable[np.ndarray], phrases: Sequence[str]) -> list[Instance]:
        """Uncaptioned instances of every phrase in `frames` (RGB uint8 (H, W, 3), consumed lazily), their
        trajectories in sampled indices (positions in `frames`) and scored by their mean frame score."""
        self._live: list[_LiveTrack] = []
        self._done: list[Instance] = []
        self._next_id = 0
        self.stats = {"frames": 0, "windows": 0, "detections": 0, "tracks_started": 0, "tracks_dropped": 0}
        window: list[np.ndarray] = []
        start = 0
        for index, frame in enumerate(frames):
            window.append(frame)
            if len(window) == self.config.redetect_every + 1:
                self._run_window(window, start, phrases, last=False)
                window, start = [frame], index
        if window:
            self._run_window(window, start, phrases, last=True)
        self.stats["frames"] = start + len(window)
        return self._finish(self.stats["frames"])

    def _run_window(self, window: list[np.ndarray], start: int, phrases: Sequence[str], last: bool) -> None:
        self.stats["windows"] += 1
        detections = self.detector.detect(window[:1], phrases)[0]
        self.stats["detections"] += len(detections)
        seeds = self._seeds(detections, start)
        tracked = self.tracker.track(np.stack(window), seeds) if seeds else \
            [TrackedFrame(k) for k in range(len(window))]
        recorded = tracked if last else tracked[:-1]
        for offset, frame in enumerate(recorded):  # the tracker's k-th frame is sampled frame start + k
            self._record(start + offset, frame, window[0].shape[:2])
        if not last:
            self._set_pending(tracked[-1])
        self._end_lost_tracks()

    def _seeds(self, detections: list[Detection], keyframe: int) -> list[TrackSeed]:
        """Match detections to live tracks and turn the result into tracker prompts for this keyframe."""
        detections = sorted(detections, key=lambda d: -d.score)
        matches = self._associate(detections, keyframe)
        seeds = [TrackSeed(live.instance.instance_id, detections[d].box_xyxy, live.instance.phrase,
                           detections[d].score) for d, live in matches.items()]
        matched_tracks = {id(live) for live in matches.values()}
        seeds += [TrackSeed(live.instance.instance_id, live.pending, live.instance.phrase)
                  for live in self._live if id(live) not in matched_tracks and live.pending is not None]
        for d, det in enumerate(detections):
            if d not in matches and not self._duplicate(det, seeds) and len(seeds) < self.config.max_tracks:
                seeds.append(self._start_track(det, keyframe))
        return seeds[: self.config.max_tracks]

    def _associate(self, detections: list[Detection], keyframe: int) -> dict[int, _LiveTrack]:
        """Hungarian matching on box IoU (zeroed across phrases when class-aware); {detection: track}."""
        if not detections or not self._live:
            return {}
        optimize = require("scipy.optimize", "annotate")
        predicted = np.array([live.predicted_box(keyframe, self.config.lost_growth) for live in self._live])
        iou = box_iou(np.array([d.box_xyxy for d in detections]), predicted)
        if self.config.class_aware:
            same = np.array([[d.phrase == live.instance.phrase for live in self._live] for d in detections])
            iou = np.where(same, iou, 0.0)
        rows, cols = optimize.linear_sum_assignment(-iou)
        return {int(r): self._live[c] for r, c in zip(rows, cols, strict=True)
                if iou[r, c] >= self.config.match_iou}

    def _duplicate(self, detection: Detection, seeds: list[TrackSeed]) -> bool:
        if not seeds:
            return False
        overlap = box_iou(np.array([detection.box_xyxy]), np.array([s.box_xyxy for s in seeds]))[0]
        return bool(overlap.max() >= self.config.duplicate_iou)

    def _start_track(self, detection: Detection, keyframe: int) -> TrackSeed:
        trajectory = Trajectory(frame_index=[], box=[], space=FrameSpace.SAMPLED)
        instance = Instance(self._next_id, detection.phrase, caption="", trajectory=trajectory)
        self._next_id += 1
        self.stats["tracks_started"] += 1
        self._live.append(_LiveTrack(instance, detection.box_xyxy, keyframe))
        return TrackSeed(instance.instance_id, detection.box_xyxy, detection.phrase, detection.score)

    def _record(self, sampled_index: int, frame: TrackedFrame, size: tuple[int, int]) -> None:
        for live in self._live:
            obj = frame.objects.get(live.instance.instance_id)
            if obj is None or obj.box_xyxy is None or obj.score < self.config.min_score:
                live.missed += 1
                continue
            self._append(live, sampled_index, obj, obj.box_xyxy, size)

    def _append(self, live: _LiveTrack, sampled_index: int, obj: TrackedObject, tracked_box: Box,
                size: tuple[int, int]) -> None:
        box = as_box(clip_boxes([tracked_box])[0])
        trajectory = live.trajectory
        trajectory.frame_index.append(sampled_index)
        trajectory.box.append(list(box))
        trajectory.score.append(float(obj.score))
        if self.config.keep_masks:
            mask = obj.mask if obj.mask is not None else box_mask(box, size[1], size[0])
            trajectory.mask_rle.append(encode_rle(mask))
        live.last_box, live.last_seen, live.missed = box, sampled_index, 0
        live.update_velocity()

    def _set_pending(self, frame: TrackedFrame) -> None:
        for live in self._live:
            obj = frame.objects.get(live.instance.instance_id)
            box = obj.box_xyxy if obj is not None and obj.score >= self.config.min_score else None
            live.pending = as_box(clip_boxes([box])[0]) if box is not None else None

    def _end_lost_tracks(self) -> None:
        ended = [live for live in self._live if live.missed > self.config.max_missed]
        self._done += [live.instance for live in ended]
        self._live = [live for live in self._live if live.missed <= self.config.max_missed]

    def _finish(self, num_frames: int) -> list[Instance]:
        """Drop short and tiny tracks; score and renumber the rest 0..K-1 by first frame."""
        tracks = self._done + [live.instance for live in self._live]
        min_frames = min(self.config.min_frames, num_frames)  # an image's tracks have one frame
        kept = [t for t in tracks if len(t.trajectory.frame_index) >= min_frames
                and t.trajectory.mean_area() >= self.config.min_area]
        self.stats["tracks_dropped"] = len(tracks) - len(kept)
        kept.sort(key=lambda t: (t.trajectory.frame_index[0], t.instance_id))
        for new_id, track in enumerate(kept):
            track.instance_id, track.score = new_id, track.trajectory.mean_score()
        log.debug("trajectories: %s", self.stats)
        return kept


def encode_rle(mask: np.ndarray) -> str:
    """COCO RLE counts of a (H, W) boolean mask, as the ASCII string stored in shards."""
    mask_api = require("pycocotools.mask", "annotate")
    return mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """The (H, W) boolean mask of a stored COCO RLE counts string."""
    mask_api = require("pycocotools.mask", "annotate")
    with warnings.catch_warnings():  # pycocotools' own numpy-2 copy-keyword deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_api.decode({"size": [height, width], "counts": counts}).astype(bool)
