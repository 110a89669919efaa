"""Records passed between the annotation engines: detections, tracker seeds and outputs, and tracks.

Boxes are always xyxy normalised to [0, 1] of the frame they belong to; masks are (H, W) bool arrays at
frame resolution. Frame indices are positions in the clip's decoded frame sequence.
"""

from dataclasses import dataclass, field

import numpy as np

from instvl.datasets.records import Instance, Trajectory

Box = tuple[float, float, float, float]


def as_box(values) -> Box:
    """Four floats (x0, y0, x1, y1) from any sequence or array of four numbers."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(values, dtype=np.float64).reshape(4))
    return (x0, y0, x1, y1)


def box_area(box: Box) -> float:
    """Area of a normalised xyxy box (0 for degenerate boxes)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


@dataclass(slots=True)
class Detection:
    """One open-vocabulary detection on one frame: normalised xyxy box, confidence and matched phrase."""

    box_xyxy: Box
    score: float
    phrase: str

    @property
    def area(self) -> float:
        return box_area(self.box_xyxy)


@dataclass(slots=True)
class TrackSeed:
    """A prompt for the tracker: object `obj_id` is at `box_xyxy` on the first frame of a window."""

    obj_id: int
    box_xyxy: Box
    phrase: str = ""
    score: float = 1.0


@dataclass(slots=True)
class TrackedObject:
    """One object on one frame as the tracker sees it; `box_xyxy` is None when the object is lost."""

    obj_id: int
    box_xyxy: Box | None
    score: float
    mask: np.ndarray | None = None

    @property
    def visible(self) -> bool:
        return self.box_xyxy is not None


@dataclass(slots=True)
class TrackedFrame:
    """The tracker's output for one frame of a window: every seeded object, visible or not."""

    frame_index: int
    objects: dict[int, TrackedObject] = field(default_factory=dict)


@dataclass(slots=True)
class Track:
    """A finished trajectory of one instance, as the trajectory builder returns it.

    `track_id` is 0..K-1 in order of first appearance; `mask_rle` is empty when masks are not kept,
    otherwise one COCO RLE counts string per frame (size = the clip's height, width).
    """

    track_id: int
    phrase: str
    frame_index: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    mask_rle: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frame_index)

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0

    @property
    def mean_area(self) -> float:
        return float(np.mean([box_area(b) for b in self.boxes])) if self.boxes else 0.0

    def boxes_array(self) -> np.ndarray:
        """The boxes as a (T, 4) float32 array."""
        return np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)

    def to_trajectory(self) -> Trajectory:
        return Trajectory(frame_index=list(self.frame_index), box=[list(b) for b in self.boxes],
                          score=list(self.scores), mask_rle=list(self.mask_rle))

    def to_instance(self, caption: str = "") -> Instance:
        """The shard record of this track, with an instance caption filled in by the captioner."""
        return Instance(instance_id=self.track_id, phrase=self.phrase, caption=caption,
                        trajectory=self.to_trajectory(), score=self.mean_score)
