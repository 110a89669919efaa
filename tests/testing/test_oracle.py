"""The ground-truth detector and tracker: they answer from known boxes, recognising frames by their pixels."""

import numpy as np
import pytest

from instvl.annotate.detect.base import Detector
from instvl.annotate.track.base import Tracker
from instvl.annotate.tracks import TrackSeed
from instvl.datasets.records import Instance, Trajectory
from instvl.testing.media import moving_square, noise_frames
from instvl.testing.oracle import OracleDetector, OracleTracker, ground_truth_from_instances

GT = np.array([[[0.1, 0.1, 0.3, 0.3], [np.nan] * 4], [[0.2, 0.1, 0.4, 0.3], [0.5, 0.5, 0.9, 0.9]]])


def test_oracles_implement_the_production_protocols():
    frames = noise_frames(2)
    assert isinstance(OracleDetector(frames, GT, ["dog", "cat"]), Detector)
    assert isinstance(OracleTracker(frames, GT), Tracker)


def test_detector_returns_the_visible_truth_of_each_frame_it_is_shown():
    frames = noise_frames(2)
    detector = OracleDetector(frames, GT, ["Dog", "cat"])
    found = detector.detect(frames[::-1], ["dog", "cat"])
    assert [(d.phrase, d.box_xyxy) for d in found[1]] == [("dog", pytest.approx((0.1, 0.1, 0.3, 0.3)))]
    assert sorted(d.phrase for d in found[0]) == ["cat", "dog"]
    assert detector.detect(frames[:1], ["cat"]) == [[]]  # cat is hidden on frame 0
    assert OracleDetector(frames, GT, ["dog", "cat"], miss_rate=1.0).detect(frames, ["dog"]) == [[], []]
    with pytest.raises(KeyError, match="none of the 2 ground-truth frames"):
        detector.detect(noise_frames(1, seed=9), ["dog"])


def test_detector_noise_is_seeded_per_frame():
    frames = noise_frames(2)
    noisy = OracleDetector(frames, GT, ["dog", "cat"], jitter=0.1, seed=4)
    first = noisy.detect(frames, ["dog"])
    assert noisy.detect(frames[1:], ["dog"])[0] == first[1]
    assert first[0][0].box_xyxy != pytest.approx((0.1, 0.1, 0.3, 0.3))


def test_tracker_follows_the_object_its_seed_overlaps():
    frames, boxes = moving_square(6)
    gt = np.stack([boxes, np.full_like(boxes, np.nan)], axis=1)
    gt[3, 0] = np.nan
    out = OracleTracker(frames, gt).track(frames[2:], [TrackSeed(5, tuple(boxes[2] + 0.01))])
    assert [f.window_index for f in out] == [0, 1, 2, 3]  # numbered within the window
    assert [f.objects[5].visible for f in out] == [True, False, True, True]
    np.testing.assert_allclose(out[-1].objects[5].box_xyxy, boxes[5])
    lost = OracleTracker(frames, gt).track(frames, [TrackSeed(1, (0.0, 0.0, 0.01, 0.01))])
    assert not any(f.objects[1].visible for f in lost)


def test_ground_truth_must_fit_the_frames():
    with pytest.raises(ValueError, match="got 3 frames for 2"):
        OracleTracker(noise_frames(3), GT)
    with pytest.raises(ValueError, match="1 phrases for 2 objects"):
        OracleDetector(noise_frames(2), GT, ["dog"])


def test_ground_truth_from_sample_instances():
    instances = [Instance(0, "dog", "", Trajectory([0, 2], [[0.1, 0.1, 0.2, 0.2], [0.3, 0.1, 0.4, 0.2]])),
                 Instance(1, "cat", "", Trajectory([1], [[0.5, 0.5, 0.6, 0.6]]))]
    boxes, phrases = ground_truth_from_instances(instances, num_frames=3)
    assert phrases == ["dog", "cat"] and boxes.shape == (3, 2, 4)
    assert np.isnan(boxes[1, 0]).all() and np.isnan(boxes[0, 1]).all()
    np.testing.assert_allclose(boxes[2, 0], [0.3, 0.1, 0.4, 0.2])
    with pytest.raises(ValueError, match="instance 0: frame 2 outside"):
        ground_truth_from_instances(instances, num_frames=1)


def test_false_positives_lie_on_no_object_score_lower_and_are_seeded():
    frames = noise_frames(2)
    truth = OracleDetector(frames, GT, ["dog", "cat"], score=0.9)
    noisy = OracleDetector(frames, GT, ["dog", "cat"], score=0.9, false_positive_rate=3.0,
                           false_positive_score=0.4, score_spread=0.1, seed=1)
    found = noisy.detect(frames, ["dog", "cat"])
    true_boxes = [np.array([d.box_xyxy for d in frame]) for frame in truth.detect(frames, ["dog", "cat"])]
    false = [d for frame, real in zip(found, true_boxes, strict=True) for d in frame
             if not np.isclose(real, d.box_xyxy).all(axis=1).any()]
    assert len(false) >= 4  # about 3 x 2 objects per frame
    assert all(0.3 - 1e-6 <= d.score <= 0.5 + 1e-6 and d.phrase in {"dog", "cat"} for d in false)
    assert all(0 <= c <= 1 for d in false for c in d.box_xyxy)
    assert noisy.detect(frames, ["dog", "cat"]) == found  # the same draws every time
    reseeded = OracleDetector(frames, GT, ["dog", "cat"], false_positive_rate=3.0, seed=2)
    other = reseeded.detect(frames, ["dog"])
    assert [d.box_xyxy for d in other[0]] != [d.box_xyxy for d in found[0] if d.phrase == "dog"]
    # Only wanted labels: a prompt without "cat" gets no false cat.
    assert all(d.phrase == "dog" for frame in noisy.detect(frames, ["dog"]) for d in frame)


def test_synonym_labels_are_drawn_among_the_wanted_names():
    frames = noise_frames(2)
    detector = OracleDetector(frames, GT, ["dog", "cat"], synonyms={"dog": ["puppy", "hound"]}, seed=3)
    assert detector.names("dog") == ["dog", "puppy", "hound"]
    labels = {d.phrase for seed in range(12) for frame in OracleDetector(
        frames, GT, ["dog", "cat"], synonyms={"dog": ["puppy", "hound"]}, seed=seed).detect(
        frames, ["dog", "puppy", "hound", "cat"]) for d in frame}
    assert labels == {"dog", "puppy", "hound", "cat"}
    # A synonym that was not prompted is never given; the object is still found under the others.
    only = detector.detect(frames, ["hound"])
    assert [d.phrase for d in only[1]] == ["hound"] and only[0][0].phrase == "hound"
    assert detector.detect(frames, ["wolf"]) == [[], []]
