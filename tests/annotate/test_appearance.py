"""The appearance cue: colour histograms and box sizes tell an object from a differently coloured or
differently sized one."""

import numpy as np
import pytest

from instvl.annotate.appearance import appearance, blend, look_similarity
from instvl.testing.media import crossing_scene


def test_a_box_looks_like_its_object_elsewhere_and_unlike_another_colour():
    frames, gt, phrases = crossing_scene()
    red, blue = phrases.index("red square"), phrases.index("blue square")
    early, late = appearance(frames[0], gt[0, red]), appearance(frames[20], gt[20, red])
    other = appearance(frames[0], gt[0, blue])
    assert early.colours.sum() == pytest.approx(1.0) and early.colours.shape == (8 ** 3,)
    assert look_similarity(early, late, 0.5) > 0.95
    assert look_similarity(early, other, 0.5) < 0.5
    assert look_similarity(early, early, 0.5) == pytest.approx(1.0)


def test_the_size_weight_tells_a_small_object_from_a_large_one_of_the_same_colour():
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[8:20, 8:20] = frame[8:26, 40:58] = (200, 30, 30)  # red squares of 12 and 18 pixels
    small, large = appearance(frame, (8 / 96, 8 / 64, 20 / 96, 20 / 64)), \
        appearance(frame, (40 / 96, 8 / 64, 58 / 96, 26 / 64))
    assert look_similarity(small, large, 0.0) == pytest.approx(1.0)
    assert look_similarity(small, large, 0.5) == pytest.approx(1.5 ** -0.5)
    assert look_similarity(small, large, 1.0) < look_similarity(small, large, 0.5)


def test_similarity_is_zero_for_disjoint_colours_and_blend_moves_towards_the_new_look():
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    dark, light = appearance(black, (0.0, 0.0, 1.0, 1.0)), appearance(white, (0.0, 0.0, 0.5, 0.5))
    assert look_similarity(dark, light, 0.5) == 0.0
    assert blend(None, dark, 0.3) is dark
    mixed = blend(dark, light, 0.3)
    assert mixed.colours.sum() == pytest.approx(1.0)
    assert mixed.log_size == pytest.approx(0.7 * np.log(8) + 0.3 * np.log(4))
    assert look_similarity(mixed, dark, 0.5) > look_similarity(mixed, light, 0.5) > 0
