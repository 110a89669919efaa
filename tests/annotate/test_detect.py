"""Detector backends and what they share (NMS, phrase spans, query decoding)."""

import numpy as np
import pytest
from pydantic import TypeAdapter

from instvl.annotate.detect import (
    DetectorConfig,
    FakeDetector,
    GroundingDinoDetector,
    HFDetector,
    PixelDetector,
)
from instvl.annotate.detect.base import (
    MixedDetector,
    decode_queries,
    nms,
    phrase_token_spans,
    prompt_jobs,
    suppress_duplicates,
)
from instvl.annotate.tracks import Detection
from instvl.deps import MissingDependencyError, is_available
from instvl.geometry import box_iou
from instvl.testing.media import noise_frames


def test_nms_hand_example():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9], [21, 21, 29, 29]],
                     float)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.5])
    # 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU ~0.61 > 0.5); 2 suppresses 4 (IoU 0.64)
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2, 4]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_class_aware_then_cross_phrase_suppression():
    dets = [Detection((0.1, 0.1, 0.5, 0.5), 0.9, "dog"), Detection((0.12, 0.1, 0.5, 0.5), 0.8, "dog"),
            Detection((0.1, 0.1, 0.5, 0.52), 0.7, "puppy"), Detection((0.3, 0.3, 0.7, 0.7), 0.6, "cat")]
    kept = suppress_duplicates(dets, class_iou=0.5, cross_iou=0.8)
    assert [(d.phrase, d.score) for d in kept] == [("dog", 0.9), ("cat", 0.6)]
    # a dog and a cat that overlap (IoU 0.14) are both kept, even at a strict class threshold
    assert len(suppress_duplicates(dets, class_iou=0.99, cross_iou=0.99)) == 4
    assert len(suppress_duplicates(dets, max_detections=1)) == 1


def test_query_decoding_assigns_one_phrase_per_box():
    spans = phrase_token_spans(lambda p: len(p.split()), ["red ball", "dog"])
    assert spans == [(1, 3), (4, 5)]  # [CLS] red ball . dog . [SEP]
    probs = np.zeros((3, 7))
    probs[0, 1:3] = [0.9, 0.3]   # red ball
    probs[1, 4] = 0.6            # dog
    probs[1, 2] = 0.5
    probs[2, 4] = 0.2            # below box threshold
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])
    dets = decode_queries(probs, boxes, spans, ["red ball", "dog"], box_threshold=0.3, text_threshold=0.25)
    assert [(d.phrase, round(d.score, 2)) for d in dets] == [("red ball", 0.9), ("dog", 0.6)]
    np.testing.assert_allclose(dets[0].box_xyxy, (0.4, 0.4, 0.6, 0.6), atol=1e-6)


def test_hf_tiny_random_detects_on_two_frames():
    detector = HFDetector.Config(tiny_random=True, box_threshold=0.0, text_threshold=0.0, min_side=96,
                                 max_side=128, batch_size=2, max_detections=20).build()
    phrases = ["Red Ball", "a dog", "cube."]
    results = detector.detect(noise_frames(2), phrases)
    assert len(results) == 2
    for dets in results:
        assert 0 < len(dets) <= 20
        boxes = np.array([d.box_xyxy for d in dets])
        assert boxes.min() >= 0 and boxes.max() <= 1
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert {d.phrase for d in dets} <= {"red ball", "a dog", "cube"}
        assert all(0 <= d.score <= 1 for d in dets)
        assert all(box_iou(boxes[i:i + 1], boxes[i + 1:]).max(initial=0) <= 0.8 for i in range(len(boxes)))
    # real token spans: the prompt's pieces are the phrases' pieces plus one '.' each
    _, spans = detector._encode(["red ball", "a dog"])
    assert spans[0] == (1, 3) and spans[1][0] == 4


def test_hf_thresholds_and_bad_frames():
    detector = HFDetector.Config(tiny_random=True, box_threshold=1.0, min_side=64, max_side=96).build()
    assert detector.detect(noise_frames(1), ["dog"]) == [[]]
    with pytest.raises(ValueError, match="frame 0.*uint8"):
        detector.detect([np.zeros((8, 8, 3), np.float32)], ["dog"])


def test_fake_random_is_deterministic_per_frame():
    detector = FakeDetector.Config(seed=3, max_detections=4).build()
    frames = noise_frames(3)
    first = detector.detect(frames, ["dog", "cat"])
    assert detector.detect(frames[::-1], ["dog", "cat"]) == first[::-1]
    assert all(len(d) <= 4 and {x.phrase for x in d} <= {"dog", "cat"} for d in first)
    assert detector.detect(frames, []) == [[], [], []]


def test_detector_config_union_picks_the_backend(tmp_path):
    adapter = TypeAdapter(DetectorConfig)
    assert isinstance(adapter.validate_python({"kind": "fake", "mode": "random"}), FakeDetector.Config)
    assert adapter.validate_python({"kind": "hf"}).model == "IDEA-Research/grounding-dino-tiny"
    gd = adapter.validate_python({"kind": "groundingdino", "checkpoint_path": str(tmp_path / "g.pth")})
    assert isinstance(gd, GroundingDinoDetector.Config)
    with pytest.raises(ValueError):
        adapter.validate_python({"kind": "yolo"})


@pytest.mark.skipif(is_available("groundingdino"), reason="groundingdino-py is installed")
def test_groundingdino_missing_package_names_the_extra(tmp_path):
    config = GroundingDinoDetector.Config(checkpoint_path=tmp_path / "groundingdino_swint_ogc.pth")
    with pytest.raises(MissingDependencyError, match=r"instvl\[groundingdino\]"):
        config.build()



def test_prompt_jobs_run_group_by_group():
    split = {("a", "b", "c"): [["a", "b"], ["c"]], ("d",): [["d"]]}
    jobs = prompt_jobs([("a", "b", "c"), ("d",), ("a", "b", "c")], lambda p: split[tuple(p)])
    assert jobs == [(0, ["a", "b"]), (1, ["d"]), (2, ["a", "b"]), (0, ["c"]), (2, ["c"])]
    assert prompt_jobs([], lambda p: [list(p)]) == []


def assert_same_detections(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [d.phrase for d in g] == [d.phrase for d in w]
        np.testing.assert_allclose([d.box_xyxy for d in g], [d.box_xyxy for d in w], atol=1e-4)
        np.testing.assert_allclose([d.score for d in g], [d.score for d in w], atol=1e-4)


PHRASE_LISTS = [["red ball", "a dog"], ["cube"], ["a very long phrase about a striped cat", "dog"], ["cube"]]


def test_hf_detect_many_mixes_prompts_in_one_batch():
    """Frames with different phrase lists (prompts of different lengths, padded) in one batch answer as
    they do alone."""
    detector = HFDetector.Config(tiny_random=True, box_threshold=0.0, text_threshold=0.0, min_side=64,
                                 max_side=96, batch_size=4, max_detections=10).build()
    assert isinstance(detector, MixedDetector)
    frames = noise_frames(4)
    mixed = detector.detect_many(frames, PHRASE_LISTS)
    alone = [detector.detect([frame], phrases)[0]
             for frame, phrases in zip(frames, PHRASE_LISTS, strict=True)]
    assert_same_detections(mixed, alone)
    assert all(mixed)


@pytest.mark.parametrize("config", [FakeDetector.Config(seed=1, max_detections=4), PixelDetector.Config()])
def test_weight_free_detect_many_matches_detect(config):
    detector = config.build()
    assert isinstance(detector, MixedDetector)
    frames = noise_frames(4)
    alone = [detector.detect([frame], phrases)[0]
             for frame, phrases in zip(frames, PHRASE_LISTS, strict=True)]
    assert detector.detect_many(frames, PHRASE_LISTS) == alone
    with pytest.raises(ValueError):
        detector.detect_many(frames, PHRASE_LISTS[:2])


def test_hf_detector_pixels_match_the_transformers_image_processor():
    """`detect.hf.preprocess_frames` builds GroundingDINO's input itself; the official image processor
    (the PIL one: .venv has no torchvision) must give the same size, padding mask and pixels, within
    one uint8 step (it rounds the resized image to uint8 before normalising, we do not)."""
    transformers = pytest.importorskip("transformers")
    cv2 = pytest.importorskip("cv2")
    from instvl.annotate.detect.hf import preprocess_frames

    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 3)
              for shape in [(48, 64, 3), (70, 40, 3)]]  # two sizes: padding to the larger one
    ours, mask = preprocess_frames(frames, 96, 160)
    processor = transformers.GroundingDinoImageProcessorPil(size={"shortest_edge": 96, "longest_edge": 160})
    reference = processor(images=frames, return_tensors="pt")
    assert ours.shape == reference["pixel_values"].shape
    assert (mask == reference["pixel_mask"]).all()
    difference = (ours - reference["pixel_values"]).abs()
    assert float(difference.max()) < 1.5 / 255 / 0.224 and float(difference.mean()) < 0.01
