"""A deterministic detector for tests, demos and CI: seeded pseudo-detections without a model.

Boxes derive from a hash of each frame's pixels, so the same frame always gives the same detections.
(Ground-truth detections for measuring the trajectory builder: `instvl.testing.oracle.OracleDetector`.)
"""

import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from instvl.annotate.detect.base import check_frames, make_detections
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.tracks import Detection
from instvl.config import BaseConfig


class FakeDetector:
    """Deterministic detections without a model."""

    class Config(BaseConfig):
        kind: Literal["fake"] = "fake"
        mode: Literal["random"] = "random"
        """How boxes are made (the only way; recorded in provenance as `fake:random`)."""
        seed: int = 0
        max_detections: int = 3
        """At most this many boxes per frame."""

        def build(self) -> "FakeDetector":
            return FakeDetector(self)

    def __init__(self, config: Config | None = None):
        self.config = config or FakeDetector.Config()

    model_id = "fake"

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        return self.detect_many(frames, [phrases] * len(frames))

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One phrase list per frame (`detect.base.MixedDetector`)."""
        check_frames(frames)
        return [self._random(frame, unique_phrases(phrases))
                for frame, phrases in zip(frames, phrase_lists, strict=True)]

    def _random(self, frame: np.ndarray, phrases: list[str]) -> list[Detection]:
        if not phrases:
            return []
        rng = np.random.default_rng([self.config.seed, zlib.crc32(np.ascontiguousarray(frame).tobytes())])
        n = int(rng.integers(0, self.config.max_detections + 1))
        centres, sizes = rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.1, 0.4, (n, 2))
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        labels = [phrases[i] for i in rng.integers(0, len(phrases), n)]
        return make_detections(boxes, np.round(rng.uniform(0.3, 1.0, n), 3), labels)
