"""The appearance cue: colour histograms of boxes tell an object from a differently coloured one."""

import numpy as np
import pytest

from instvl.annotate.appearance import appearance, blend, look_similarity
from instvl.testing.media import crossing_scene


def test_a_box_looks_like_its_object_elsewhere_and_unlike_another_colour():
    frames, gt, phrases = crossing_scene()
    red, blue = phrases.index("red square"), phrases.index("blue square")
    early, late = appearance(frames[0], gt[0, red]), appearance(frames[20], gt[20, red])
    other = appearance(frames[0], gt[0, blue])
    assert early.sum() == pytest.approx(1.0) and early.shape == (8 ** 3,)
    assert look_similarity(early, late) > 0.95
    assert look_similarity(early, other) < 0.5
    assert look_similarity(early, early) == pytest.approx(1.0)


def test_similarity_is_zero_for_disjoint_colours_and_blend_moves_towards_the_new_look():
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    box = (0.0, 0.0, 1.0, 1.0)
    dark, light = appearance(black, box), appearance(white, box)
    assert look_similarity(dark, light) == 0.0
    assert blend(None, dark, 0.3) is dark
    mixed = blend(dark, light, 0.3)
    assert mixed.sum() == pytest.approx(1.0)
    assert look_similarity(mixed, dark) > look_similarity(mixed, light) > 0
