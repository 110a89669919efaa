"""The weight-free colour-segmentation detector: regions, shapes and colours from pixels, phrase matching."""

import numpy as np
import pytest

from instvl.annotate.detect import DetectorConfig, PixelDetector
from instvl.annotate.detect.pixels import Region, classify_shape, match_phrase
from instvl.datasets.synth.render import sprite
from instvl.geometry import box_iou


def _scene(objects, size=96, background=110):
    frame = np.full((size, size, 3), background, np.uint8)
    boxes = []
    for shape, colour, texture, side, (x, y) in objects:
        mask, pixels = sprite(shape, colour, texture, side)
        frame[y:y + side, x:x + side][mask] = pixels[mask]
        ys, xs = np.nonzero(mask)
        boxes.append([(x + xs.min()) / size, (y + ys.min()) / size, (x + xs.max() + 1) / size,
                      (y + ys.max() + 1) / size])
    return frame, np.array(boxes)


def test_finds_and_names_textured_objects_with_tight_boxes():
    frame, truth = _scene([("circle", "red", "striped", 24, (8, 8)),
                           ("square", "blue", "checkered", 22, (60, 10)),
                           ("triangle", "yellow", "plain", 26, (30, 60))])
    found = PixelDetector().detect([frame], ["red circle", "blue square", "yellow triangle"])[0]
    assert sorted(d.phrase for d in found) == ["blue square", "red circle", "yellow triangle"]
    for detection in found:
        k = ["red circle", "blue square", "yellow triangle"].index(detection.phrase)
        assert box_iou(np.array([detection.box_xyxy]), truth[k:k + 1])[0, 0] > 0.8


def test_phrases_select_what_is_reported():
    frame, _ = _scene([("circle", "red", "plain", 24, (8, 8)), ("square", "blue", "plain", 22, (60, 10))])
    detector = PixelDetector()
    assert [d.phrase for d in detector.detect([frame], ["blue square"])[0]] == ["blue square"]
    assert sorted(d.phrase for d in detector.detect([frame], ["object"])[0]) == ["object", "object"]
    assert detector.detect([frame], ["person", "green circle"]) == [[]]


def test_match_phrase_prefers_the_most_specific():
    region = Region((0, 0, 1, 1), "red", "circle", 1.0, np.ones((2, 2), bool))
    assert match_phrase(region, ["object", "circle", "red circle", "blue circle"]) == "red circle"
    assert match_phrase(region, ["circles"]) == "circles"
    assert match_phrase(region, ["dog", "red square"]) is None


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star", "ring", "diamond", "cross",
                                   "hexagon"])
def test_shape_names_from_silhouettes(shape):
    mask, _ = sprite(shape, "red", "plain", 32)
    ys, xs = np.nonzero(mask)
    assert classify_shape(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]) == shape


def test_background_without_flat_colour_gives_nothing():
    rng = np.random.default_rng(0)
    noise = rng.integers(60, 180, (64, 64, 3), dtype=np.uint8)
    assert PixelDetector().detect([noise], ["object"]) == [[]]


def test_config_kind():
    from pydantic import TypeAdapter

    cfg = TypeAdapter(DetectorConfig).validate_python({"kind": "pixels", "colour_tolerance": 40})
    assert isinstance(cfg, PixelDetector.Config) and cfg.build().config.colour_tolerance == 40
