"""Stored masks: RLE strings say how many pixels they cover, are refused at another size, and follow the
row's media when it is stored smaller than the frames the annotation models saw."""

import numpy as np
import pytest

from instvl.datasets.records import (
    FrameSpace,
    Instance,
    Sample,
    Trajectory,
    decode_rle,
    encode_rle,
    resize_rle,
    rle_pixels,
)


def disc(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    return (ys + 0.5 - cy * height) ** 2 + (xs + 0.5 - cx * width) ** 2 <= radius ** 2


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (48, 853), (481, 640)])
def test_rle_pixels_is_the_size_the_mask_was_encoded_at(size):
    mask = np.random.default_rng(sum(size)).random(size) < 0.3
    counts = encode_rle(mask)
    assert rle_pixels(counts) == size[0] * size[1]
    np.testing.assert_array_equal(decode_rle(counts, *size), mask)


def test_a_mask_at_another_size_is_refused_not_misread():
    counts = encode_rle(disc(480, 853, 0.5, 0.5, 100))
    with pytest.raises(ValueError, match=r"covers 409440 pixels, not 480x852"):
        decode_rle(counts, 480, 852)  # pycocotools alone returns a sheared mask or a bare error
    with pytest.raises(ValueError, match="not a COCO RLE"):
        rle_pixels("rle-0")


def test_resize_rle_keeps_the_shape_where_it_was():
    big = disc(360, 640, 0.3, 0.7, 60)
    small = decode_rle(resize_rle(encode_rle(big), (360, 640), (90, 160)), 90, 160)
    expected = disc(90, 160, 0.3, 0.7, 15)
    assert (small & expected).sum() / (small | expected).sum() > 0.9
    assert resize_rle("", (360, 640), (90, 160)) == ""  # a frame without a mask stays without


def test_fit_masks_re_encodes_every_mask_at_the_rows_size():
    frames = [disc(96, 160, 0.5, 0.2 + 0.1 * t, 20) for t in range(3)]
    trajectory = Trajectory([0, 4, 8], [[0, 0, 1, 1]] * 3, [1.0] * 3, [encode_rle(m) for m in frames],
                            FrameSpace.CLIP)
    sample = Sample("s", "video", width=66, height=40, num_frames=9, global_caption="discs",
                    instances=[Instance(0, "disc", "a disc", trajectory)])
    sample.fit_masks((96, 160, 3))
    for t, counts in enumerate(sample.instances[0].trajectory.mask_rle):
        mask = decode_rle(counts, 40, 66)
        centre = np.argwhere(mask).mean(axis=0) / (40, 66)
        np.testing.assert_allclose(centre, (0.5, 0.2 + 0.1 * t), atol=0.03)


def test_a_densely_tracked_trajectory_keeps_only_the_stored_frames_as_positions_among_them():
    dense = Trajectory(frame_index=[0, 1, 2, 3, 6], box=[[0.1 * i, 0, 0.5, 0.5] for i in range(5)],
                       score=[0.9, 0.8, 0.7, 0.6, 0.5], space=FrameSpace.SAMPLED)
    stored = dense.at_stored([0, 3, 6, 9])
    assert stored.frame_index == [0, 1, 2] and stored.space == FrameSpace.SAMPLED
    assert stored.box == [dense.box[0], dense.box[3], dense.box[4]] and stored.score == [0.9, 0.6, 0.5]
