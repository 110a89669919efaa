"""Open-vocabulary detectors: noun phrases in, normalised boxes out (`Detector.detect`).

Pick a backend with `kind` in the config: `hf` (transformers GroundingDINO, default), `groundingdino`
(the original package, own environment), `fake` (deterministic, for tests and demos).
"""

from typing import Annotated

from pydantic import Field

from instvl.annotate.detect.base import Detector, nms, suppress_duplicates
from instvl.annotate.detect.fake import FakeDetector
from instvl.annotate.detect.groundingdino import GroundingDinoDetector
from instvl.annotate.detect.hf import HFDetector

DetectorConfig = Annotated[HFDetector.Config | GroundingDinoDetector.Config | FakeDetector.Config,
                           Field(discriminator="kind")]

__all__ = ["Detector", "DetectorConfig", "FakeDetector", "GroundingDinoDetector", "HFDetector",
           "nms", "suppress_duplicates"]
