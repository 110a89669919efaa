"""Synthetic media: frames with known boxes, and bytes that decode back to them."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from instvl.media.decode import decode_frames
from instvl.testing.media import (
    crossing_scene,
    exif_rotated_jpeg,
    jpeg_bytes,
    moving_square,
    mp4_bytes,
    noise_frames,
    paint_boxes,
    png_bytes,
    solid_frames,
    write_mp4,
)


def test_moving_square_boxes_cover_the_square_exactly():
    frames, boxes = moving_square(6, 64, 48, seed=2)
    assert frames.shape == (6, 48, 64, 3) and boxes.shape == (6, 4)
    background = frames[0, 0, 0]
    for frame, (x0, y0, x1, y1) in zip(frames, boxes, strict=True):
        px = np.round([x0 * 64, y0 * 48, x1 * 64, y1 * 48]).astype(int)
        assert (frame[px[1]:px[3], px[0]:px[2]] != background).any(axis=-1).all()
        outside = frame.copy()
        outside[px[1]:px[3], px[0]:px[2]] = background
        assert (outside == background).all()
    assert boxes[0, 0] == 0 and boxes[-1, 2] == 1  # left edge to right edge


def test_a_cut_changes_every_pixel_colour():
    frames, _ = moving_square(4, 32, 32, cut_at=2)
    assert (frames[1, 0, 0] != frames[2, 0, 0]).any() and (frames[0] == frames[0, 0, 0]).any()


def test_paint_boxes_draws_later_objects_on_top_and_skips_absent_ones():
    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]],
                      [[0.0, 0.0, 0.5, 0.5], [np.nan] * 4]])
    frames = paint_boxes(boxes, 8, 8, [(255, 0, 0), (0, 0, 255)], background=0)
    assert tuple(frames[0, 1, 1]) == (255, 0, 0) and tuple(frames[0, 3, 3]) == (0, 0, 255)
    assert tuple(frames[1, 3, 3]) == (255, 0, 0) and tuple(frames[1, 5, 5]) == (0, 0, 0)


def test_crossing_scene_hides_the_red_square_and_frames_are_distinct():
    frames, boxes, phrases = crossing_scene(flash=(8, 9))
    assert phrases == ["red square", "blue square", "green square", "yellow square"]
    assert np.isnan(boxes[:, 0, 0]).sum() >= 2  # red behind blue for a while
    assert np.flatnonzero(~np.isnan(boxes[:, 3, 0])).tolist() == [8, 9]
    assert len({frame.tobytes() for frame in frames}) == len(frames)


def test_still_frames():
    noise = noise_frames(3, 20, 10, seed=1)
    assert [f.shape for f in noise] == [(10, 20, 3)] * 3 and not np.array_equal(noise[0], noise[1])
    assert np.array_equal(noise, noise_frames(3, 20, 10, seed=1))
    assert all((f == (1, 2, 3)).all() for f in solid_frames(2, 4, 4, (1, 2, 3)))


def test_mp4_round_trips_through_the_production_decoder(tmp_path):
    frames, _ = moving_square(8, 64, 48)
    data = mp4_bytes(frames, fps=8, crf=10)
    decoded = decode_frames(data, "clip.mp4", range(8), decoder="pyav").frames
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3
    path = write_mp4(tmp_path / "sub" / "clip.mp4", frames)
    assert path.is_file() and path.read_bytes()[4:8] == b"ftyp"


def test_png_is_lossless_and_jpeg_close():
    frame = noise_frames(1, 16, 8)[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(frame)))), frame)
    flat = solid_frames(1, 16, 8, (200, 40, 40))[0]
    back = np.asarray(Image.open(io.BytesIO(jpeg_bytes(flat))))
    assert np.abs(back.astype(int) - flat.astype(int)).max() <= 4


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_rotated_jpeg_shows_the_upright_picture(orientation):
    upright = np.zeros((24, 40, 3), np.uint8)
    upright[:8, :8] = (255, 0, 0)  # a red top-left corner tells every turn and flip apart
    image = Image.open(io.BytesIO(exif_rotated_jpeg(upright, orientation)))
    assert image.getexif()[0x0112] == orientation
    stored = np.asarray(image)
    assert stored.shape == ((40, 24, 3) if orientation >= 5 else (24, 40, 3))
    shown = np.asarray(ImageOps.exif_transpose(image))
    assert shown.shape == upright.shape and np.abs(shown.astype(int) - upright.astype(int)).mean() < 4
    assert shown[:8, :8, 0].mean() > 200 and shown[-8:, -8:, 0].mean() < 50


def test_exif_orientation_one_is_refused():
    with pytest.raises(ValueError, match="2..8"):
        exif_rotated_jpeg(np.zeros((4, 4, 3), np.uint8), 1)
