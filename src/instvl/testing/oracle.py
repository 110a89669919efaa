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
from collections.abc import Mapping, Sequence

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
    """Detector: the visible ground-truth boxes of each frame's phrases, optionally degraded.

    Degradations, each seeded per clip frame so a frame always gets the same detections: box `jitter`,
    misses (`miss_rate`), false positives (`false_positive_rate`) and synonym labels (`synonyms`). Scores
    carry meaning as a real detector's do: true boxes score around `score`, false positives lower.
    """

    model_id = "oracle"

    def __init__(self, frames: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray,
                 phrases: Sequence[str], *, score: float = 0.9, jitter: float = 0.0, miss_rate: float = 0.0,
                 false_positive_rate: float = 0.0, false_positive_score: float = 0.45,
                 score_spread: float = 0.0, synonyms: Mapping[str, Sequence[str]] | None = None,
                 seed: int = 0):
        """`jitter`: standard deviation of box noise as a fraction of the box size; `miss_rate`: fraction
        of visible boxes not returned; `false_positive_rate`: false boxes per frame as a fraction of the
        objects in the clip (0.1: one false box per ten objects), placed at random with an object-like
        size, a random wanted label and a score drawn within `score_spread` of `false_positive_score`;
        true scores are drawn within `score_spread` of `score`; `synonyms`: phrase -> other names, each
        detection labelled with one of the object's names at random."""
        self.truth = _GroundTruth(frames, boxes)
        if self.truth.boxes.shape[1] != len(phrases):
            raise ValueError(f"got {len(phrases)} phrases for {self.truth.boxes.shape[1]} objects")
        self.phrases = [p.lower() for p in phrases]
        self.score, self.jitter, self.miss_rate, self.seed = score, jitter, miss_rate, seed
        self.false_positive_rate, self.false_positive_score = false_positive_rate, false_positive_score
        self.score_spread = score_spread
        self.synonyms = {k.lower(): [v.lower() for v in vs] for k, vs in (synonyms or {}).items()}
        sides = self.truth.boxes[..., 2:] - self.truth.boxes[..., :2]
        self._typical_side = np.nan_to_num(np.nanmedian(sides.reshape(-1, 2), axis=0), nan=0.2) \
            if np.isfinite(sides).any() else np.array([0.2, 0.2])

    def names(self, phrase: str) -> list[str]:
        """Every label the detector may give an object of `phrase`: the phrase and its synonyms."""
        return [phrase, *self.synonyms.get(phrase, [])]

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        check_frames(frames)
        wanted = unique_phrases(phrases)
        return [self._detect(self.truth.frame_index(frame), wanted) for frame in frames]

    def _detect(self, index: int, wanted: list[str]) -> list[Detection]:
        rng = np.random.default_rng([self.seed, index])
        boxes = self.truth.boxes[index]
        visible = ~np.isnan(boxes).any(axis=1)
        hit = rng.uniform(size=len(boxes)) >= self.miss_rate
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        noisy = boxes + rng.normal(0, self.jitter, boxes.shape) * size
        labels = [[name for name in self.names(p) if name in wanted] for p in self.phrases]
        # Drawn for every object whether kept or not, so one setting never shifts another's draws.
        picks = rng.integers(0, 1 << 30, size=len(boxes))
        scores = self.score - rng.uniform(0, self.score_spread, size=len(boxes))
        keep = [n for n in range(len(boxes)) if visible[n] and hit[n] and labels[n]]
        found = make_detections(clip_boxes(noisy[keep]), scores[keep],
                                [labels[n][picks[n] % len(labels[n])] for n in keep])
        return found + self._false_positives(np.random.default_rng([self.seed, index, 1]), len(boxes), wanted)

    def _false_positives(self, rng: np.random.Generator, num_objects: int,
                         wanted: list[str]) -> list[Detection]:
        """Boxes on no object: object-sized, anywhere in the frame, with a wanted label and a lower score."""
        count = rng.poisson(self.false_positive_rate * num_objects) if self.false_positive_rate else 0
        if not count or not wanted:
            return []
        side = self._typical_side * rng.uniform(0.7, 1.3, size=(count, 2))
        corner = rng.uniform(0, 1, size=(count, 2)) * np.clip(1 - side, 0, None)
        boxes = np.concatenate([corner, corner + side], axis=1)
        scores = self.false_positive_score + rng.uniform(-self.score_spread, self.score_spread, size=count)
        labels = [wanted[i] for i in rng.integers(0, len(wanted), size=count)]
        return make_detections(boxes, np.clip(scores, 0.01, 1.0), labels)


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
