"""Records passed between the annotation engines: detections, tracker seeds and tracker outputs.

Boxes are always xyxy normalised to [0, 1] of the frame they belong to; masks are (H, W) bool arrays at
frame resolution. A tracker numbers its frames within its window (`TrackedFrame.window_index`); the
trajectory builder adds the window's start to get sampled indices (`records.FrameSpace.SAMPLED`), and a
finished trajectory is a `records.Instance` in that space until `Trajectory.to_clip_frames` maps it.
"""

from dataclasses import dataclass, field

import numpy as np

from instvl.geometry import Box, box_area


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
    """A prompt for the tracker: object `obj_id` is at `box_xyxy` on the first frame of a window; `mask`
    (frame resolution), when given, is the sharper prompt for trackers that accept masks; `velocity`,
    when known, is how the box centre moved per frame before (normalised dx, dy), for trackers that
    predict motion (a model tracker such as SAM2 ignores it)."""

    obj_id: int
    box_xyxy: Box
    phrase: str = ""
    score: float = 1.0
    mask: np.ndarray | None = None
    velocity: tuple[float, float] | None = None


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

    window_index: int
    """Position in the tracker's window (0..T-1), not yet a sampled index."""
    objects: dict[int, TrackedObject] = field(default_factory=dict)
