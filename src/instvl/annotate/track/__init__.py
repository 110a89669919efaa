"""Video trackers: box prompts on a window's first frame in, per-frame masks and boxes out (`Tracker.track`).

Pick a backend with `kind` in the config: `hf` (transformers SAM2 video), `sam2` (the sam2 package),
`fake` (deterministic template matching or ground truth, for tests and demos).
"""

from typing import Annotated

from pydantic import Field

from instvl.annotate.track.base import Tracker, mask_to_box
from instvl.annotate.track.fake import FakeTracker
from instvl.annotate.track.hf import HFTracker
from instvl.annotate.track.sam2 import SAM2Tracker

TrackerConfig = Annotated[HFTracker.Config | SAM2Tracker.Config | FakeTracker.Config,
                          Field(discriminator="kind")]

__all__ = ["FakeTracker", "HFTracker", "SAM2Tracker", "Tracker", "TrackerConfig", "mask_to_box"]
