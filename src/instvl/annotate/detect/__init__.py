"""Open-vocabulary detectors: noun phrases in, normalised boxes out (`Detector.detect`).

Pick a backend with `kind` in the config: `hf` (transformers GroundingDINO, default), `groundingdino`
(the original package, own environment), `pixels` (colour segmentation without weights: the offline
demo's detector), `fake` (seeded random boxes, for plumbing tests).
"""

from typing import Annotated

from pydantic import Field

from instvl.annotate.detect.base import Detector, nms, suppress_duplicates
from instvl.annotate.detect.fake import FakeDetector
from instvl.annotate.detect.groundingdino import GroundingDinoDetector
from instvl.annotate.detect.hf import HFDetector
from instvl.annotate.detect.pixels import PixelDetector

DetectorConfig = Annotated[HFDetector.Config | GroundingDinoDetector.Config | PixelDetector.Config
                           | FakeDetector.Config,
                           Field(discriminator="kind")]

__all__ = ["Detector", "DetectorConfig", "FakeDetector", "GroundingDinoDetector", "HFDetector",
           "PixelDetector", "nms", "suppress_duplicates"]
