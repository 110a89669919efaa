"""Retrieval grids and attention overlays are written as valid PNGs of the documented size."""

import numpy as np
import pytest
import torch
from PIL import Image

from instvl.train import visualize


def frames(num: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (num, size, size, 3), dtype=np.uint8)


def test_retrieval_grid_png(tmp_path):
    thumbs = list(frames(6))
    ranked = [[0, 3, 2], [1, 0, 5]]
    path = visualize.retrieval_grid(tmp_path / "out" / "grid.png", ["a red ball rolls left", "a cube"],
                                    thumbs, ranked, [[True, False, False], [False, True, False]],
                                    thumb_size=40, text_width=100)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (100 + 3 * 46 + 6, 2 * 46 + 6)
        pixels = np.asarray(image.convert("RGB"))
    # The first thumbnail of row 0 is framed green (correct), the second red.
    assert tuple(pixels[6, 100]) == visualize.CORRECT
    assert tuple(pixels[6, 146]) == visualize.WRONG


def test_attention_overlay_png(tmp_path):
    attention = np.zeros((2, 4, 4), np.float32)
    attention[:, 0, 0] = 1.0  # all attention on the top-left token
    boxes = np.tile([[0.5, 0.5, 0.9, 0.9]], (4, 1))
    grey = np.full((4, 48, 48, 3), 128, np.uint8)
    path = visualize.attention_overlay(tmp_path / "att.png", grey, attention, "the red ball",
                                       pred_boxes=boxes, true_boxes=boxes)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (4 * 48, 48 + visualize.CAPTION_BAND)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    top_left = pixels[visualize.CAPTION_BAND + 2, 2]
    bottom_right = pixels[visualize.CAPTION_BAND + 40, 20]
    assert top_left[0] > top_left[2] + 40  # hot (red) where the attention is
    assert bottom_right[2] > bottom_right[0] + 40  # cool (blue) elsewhere


def test_attention_overlay_scales_small_frames(tmp_path):
    path = visualize.attention_overlay(tmp_path / "big.png", frames(2, 16), np.ones((1, 2, 2)), scale=3)
    with Image.open(path) as image:
        assert image.size == (2 * 48, 48 + visualize.CAPTION_BAND)


def test_clip_to_uint8_spans_the_range():
    clip = torch.randn(3, 2, 8, 8)
    out = visualize.clip_to_uint8(clip)
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    with pytest.raises(ValueError, match="clip"):
        visualize.clip_to_uint8(torch.zeros(2, 8, 8))


def test_heat_colours_go_from_blue_to_red():
    low, high = visualize.heat_colours(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]


def test_mismatched_inputs_are_errors(tmp_path):
    with pytest.raises(ValueError, match="2 queries"):
        visualize.retrieval_grid(tmp_path / "g.png", ["a", "b"], list(frames(2)), [[0]], [[True]])
    with pytest.raises(ValueError, match="attention"):
        visualize.attention_overlay(tmp_path / "a.png", frames(2), np.zeros((4, 4)))
