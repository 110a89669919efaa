"""Ground-truth backends: a detector and a tracker that answer from known boxes instead of a model.

They implement the production `Detector` and `Tracker` protocols, so a test (or a benchmark) can measure
the trajectory builder against known identities with everything else real. The ground truth is
(T, N, 4) normalised xyxy boxes, NaN where object n is not visible on frame t, plus N phrases, e.g.
from InstVL-Synth through `ground_truth_from_instances`. The backends are built with the clip's frames
and recognise each frame they are given by its pixels, so the protocols need no frame-index argument.

    boxes, phrases = ground_truth_from_instances(sample.instances, sample.num_frames)
    detector = OracleDetector(frames, boxes, phrases, jitter=0.02, miss_rate=0.1)
    builder = TrajectoryConfig().build(detector, OracleTracker(frames, boxes))
"""

import hashlib
from collections.abc import Sequence

import numpy as np

from instvl.annotate.detect.base import check_frames, make_detections
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.track.base import start_tracking
from instvl.annotate.tracks import Detection, TrackedFrame, TrackedObject, TrackSeed
from instvl.datasets.records import Instance
from instvl.geometry import as_box, box_iou, clip_boxes


def ground_truth_from_instances(instances: Sequence[Instance],
                                num_frames: int) -> tuple[np.ndarray, list[str]]:
    """(T, N, 4) boxes (NaN where absent) and N phrases from a sample's instances, e.g. InstVL-Synth's."""
    boxes = np.full((num_frames, len(instances), 4), np.nan, np.float32)
    for n, inst in enumerate(instances):
        for frame, box in zip(inst.trajectory.frame_index, inst.trajectory.box, strict=True):
            if not 0 <= frame < num_frames:
                raise ValueError(f"instance {inst.instance_id}: frame {frame} outside the clip's "
                                 f"{num_frames} frames")
            boxes[frame, n] = box
    return boxes, [inst.phrase for inst in instances]


class _GroundTruth:
    """Boxes per clip frame, looked up by a frame's pixels (the first of identical frames wins)."""

    def __init__(self, frames: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray):
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise ValueError(f"ground truth must be (T, N, 4) boxes, got {boxes.shape}")
        if len(frames) != len(boxes):
            raise ValueError(f"got {len(frames)} frames for {len(boxes)} frames of ground truth")
        self.boxes = boxes
        self._index: dict[str, int] = {}
        for i, frame in enumerate(frames):
            self._index.setdefault(_digest(frame), i)

    def frame_index(self, frame: np.ndarray) -> int:
        """The clip frame showing exactly these pixels."""
        index = self._index.get(_digest(frame))
        if index is None:
            raise KeyError(f"a {frame.shape} frame that is none of the {len(self.boxes)} ground-truth frames")
        return index


def _digest(frame: np.ndarray) -> str:
    frame = np.ascontiguousarray(frame)
    return hashlib.blake2b(frame.tobytes() + str(frame.shape).encode(), digest_size=16).hexdigest()


class OracleDetector:
    """Detector: the visible ground-truth boxes of each frame's phrases, optionally noisy and with misses.

    Noise and misses are seeded per clip frame, so a frame always gets the same detections.
    """

    model_id = "oracle"

    def __init__(self, frames: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray,
                 phrases: Sequence[str], *, score: float = 0.9, jitter: float = 0.0, miss_rate: float = 0.0,
                 seed: int = 0):
        """`jitter`: standard deviation of box noise as a fraction of the box size; `miss_rate`: fraction
        of visible boxes not returned."""
        self.truth = _GroundTruth(frames, boxes)
        if self.truth.boxes.shape[1] != len(phrases):
            raise ValueError(f"got {len(phrases)} phrases for {self.truth.boxes.shape[1]} objects")
        self.phrases = [p.lower() for p in phrases]
        self.score, self.jitter, self.miss_rate, self.seed = score, jitter, miss_rate, seed

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        check_frames(frames)
        wanted = unique_phrases(phrases)
        return [self._detect(self.truth.frame_index(frame), wanted) for frame in frames]

    def _detect(self, index: int, wanted: list[str]) -> list[Detection]:
        rng = np.random.default_rng([self.seed, index])
        boxes = self.truth.boxes[index]
        visible = ~np.isnan(boxes).any(axis=1)
        hit = rng.uniform(size=len(boxes)) >= self.miss_rate
        keep = [n for n in range(len(boxes)) if visible[n] and hit[n] and self.phrases[n] in wanted]
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        noisy = boxes + rng.normal(0, self.jitter, boxes.shape) * size
        return make_detections(clip_boxes(noisy[keep]), np.full(len(keep), self.score),
                               [self.phrases[n] for n in keep])


class OracleTracker:
    """Tracker: each seed follows the ground-truth object it overlaps most on the window's first frame."""

    model_id = "oracle"

    def __init__(self, frames: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray):
        self.truth = _GroundTruth(frames, boxes)

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        video, out = start_tracking(frames, seeds)
        indices = [self.truth.frame_index(frame) for frame in video]
        first = np.nan_to_num(self.truth.boxes[indices[0]], nan=-1.0)
        for seed in seeds:
            overlap = box_iou(np.array([seed.box_xyxy]), first)[0]
            target = int(np.argmax(overlap)) if overlap.size and overlap.max() > 0 else None
            for tracked, i in zip(out, indices, strict=True):
                box = self.truth.boxes[i, target] if target is not None else np.full(4, np.nan)
                visible = not np.isnan(box).any()
                tracked.objects[seed.obj_id] = TrackedObject(
                    seed.obj_id, as_box(box) if visible else None, 1.0 if visible else 0.0)
        return out
