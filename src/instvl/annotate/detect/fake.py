"""A deterministic detector for tests, demos and CI: seeded pseudo-detections or a ground-truth oracle.

'random' mode derives boxes from a hash of each frame's pixels, so the same frame always gives the same
detections. 'oracle' mode returns ground-truth boxes (e.g. InstVL-Synth's), optionally jittered and with
seeded misses, which lets the trajectory builder be measured against known identities.
"""

import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from instvl.annotate.detect.base import check_frames, clip_boxes, make_detections
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.types import Detection
from instvl.config import BaseConfig
from instvl.datasets.records import Instance


class FakeDetector:
    """Deterministic detections without a model."""

    class Config(BaseConfig):
        kind: Literal["fake"] = "fake"
        mode: Literal["random", "oracle"] = "random"
        seed: int = 0
        max_detections: int = 3
        """'random' mode: at most this many boxes per frame."""
        score: float = 0.9
        """'oracle' mode: the score of every ground-truth box."""
        jitter: float = 0.0
        """'oracle' mode: standard deviation of box noise, as a fraction of the box size."""
        miss_rate: float = 0.0
        """'oracle' mode: fraction of visible ground-truth boxes that are (deterministically) not returned."""

        def build(self) -> "FakeDetector":
            return FakeDetector(self)

    def __init__(self, config: Config | None = None):
        self.config = config or FakeDetector.Config()
        self._gt_boxes: np.ndarray | None = None
        self._gt_phrases: list[str] = []

    model_id = "fake"

    def set_ground_truth(self, boxes: np.ndarray, phrases: Sequence[str]) -> None:
        """Ground truth for 'oracle' mode: (T, N, 4) normalised xyxy boxes, NaN where object n is not
        visible on frame t, and the phrase of each of the N objects."""
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.shape[1] != len(phrases):
            raise ValueError(f"ground truth must be (T, N, 4) boxes with N phrases; got {boxes.shape} "
                             f"and {len(phrases)} phrases")
        self._gt_boxes, self._gt_phrases = boxes, [p.lower() for p in phrases]

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str], *,
               frame_indices: Sequence[int] | None = None) -> list[list[Detection]]:
        check_frames(frames)
        wanted = unique_phrases(phrases)
        if self.config.mode == "random":
            return [self._random(frame, wanted) for frame in frames]
        if frame_indices is None or len(frame_indices) != len(frames):
            raise ValueError("the oracle detector needs frame_indices, one per frame")
        return [self._oracle(int(i), wanted) for i in frame_indices]

    def _random(self, frame: np.ndarray, phrases: list[str]) -> list[Detection]:
        if not phrases:
            return []
        rng = np.random.default_rng([self.config.seed, zlib.crc32(np.ascontiguousarray(frame).tobytes())])
        n = int(rng.integers(0, self.config.max_detections + 1))
        centres, sizes = rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.1, 0.4, (n, 2))
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        labels = [phrases[i] for i in rng.integers(0, len(phrases), n)]
        return make_detections(boxes, np.round(rng.uniform(0.3, 1.0, n), 3), labels)

    def _oracle(self, frame_index: int, phrases: list[str]) -> list[Detection]:
        if self._gt_boxes is None:
            raise RuntimeError("the oracle detector has no ground truth: call set_ground_truth() first")
        if not 0 <= frame_index < len(self._gt_boxes):
            raise IndexError(f"frame {frame_index} is outside the ground truth ({len(self._gt_boxes)} frames)")
        rng = np.random.default_rng([self.config.seed, frame_index])
        boxes = self._gt_boxes[frame_index]
        visible = ~np.isnan(boxes).any(axis=1)
        hit = rng.uniform(size=len(boxes)) >= self.config.miss_rate
        keep = [n for n in range(len(boxes)) if visible[n] and hit[n] and self._gt_phrases[n] in phrases]
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        noisy = boxes + rng.normal(0, self.config.jitter, boxes.shape) * size
        return make_detections(clip_boxes(noisy[keep]), np.full(len(keep), self.config.score),
                               [self._gt_phrases[n] for n in keep])


def ground_truth_from_instances(instances: Sequence[Instance], num_frames: int) -> tuple[np.ndarray, list[str]]:
    """(T, N, 4) boxes (NaN where absent) and N phrases from a sample's instances, e.g. InstVL-Synth's,
    in the form `FakeDetector.set_ground_truth` and `FakeTracker.set_ground_truth` take."""
    boxes = np.full((num_frames, len(instances), 4), np.nan, np.float32)
    for n, inst in enumerate(instances):
        for frame, box in zip(inst.trajectory.frame_index, inst.trajectory.box, strict=True):
            if not 0 <= frame < num_frames:
                raise ValueError(f"instance {inst.instance_id}: frame {frame} outside the clip's {num_frames} frames")
            boxes[frame, n] = box
    return boxes, [inst.phrase for inst in instances]
