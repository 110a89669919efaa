"""Probing: numbers of generated media, file-type sniffing and truncation checks."""

import numpy as np
import pytest

from instvl.media.fetch import MediaError
from instvl.media.probe import check_mp4_boxes, probe, sniff_format
from instvl.testing.media import raw_h264


@pytest.fixture
def make_image(tmp_path):
    """Factory: write a random RGB image in a given Pillow format."""
    from PIL import Image

    def make(name: str = "photo.png", width: int = 40, height: int = 30, fmt: str | None = None):
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = tmp_path / name
        Image.fromarray(pixels).save(path, format=fmt)
        return path, pixels

    return make


def test_probe_video_numbers(make_video):
    path, _ = make_video(num_frames=24, width=64, height=48, fps=8)
    info = probe(str(path), str(path), "video")
    assert (info.media_type, info.width, info.height, info.num_frames) == ("video", 64, 48, 24)
    assert info.fps == pytest.approx(8.0)
    assert info.duration_s == pytest.approx(3.0, abs=0.01)
    assert info.codec == "h264" and "mp4" in info.container


def test_probe_from_bytes_equals_path(make_video):
    path, _ = make_video(num_frames=12, fps=6)
    assert probe(path.read_bytes(), "x", "video") == probe(str(path), "x", "video")


def test_probe_raw_h264_stream_uses_guessed_rate(make_video, tmp_path):

    path, _ = make_video(num_frames=20, fps=10)
    raw = raw_h264(path, tmp_path / "raw.h264", 10, 64, 48)
    info = probe(str(raw), str(raw), "video")
    assert info.num_frames == 20
    assert info.fps == pytest.approx(10.0)


def test_probe_image(make_image):
    path, _ = make_image("photo.jpg", width=40, height=30, fmt="JPEG")
    info = probe(str(path), str(path), "image")
    assert (info.media_type, info.width, info.height, info.num_frames) == ("image", 40, 30, 1)
    assert info.codec == "jpeg"


def test_truncated_image_is_reported(make_image):
    path, _ = make_image("photo.png")
    data = path.read_bytes()
    with pytest.raises(MediaError, match="truncated"):
        probe(data[: len(data) // 2], "half.png", "image")


def test_video_bytes_named_as_image_is_reported(make_video):
    path, _ = make_video()
    with pytest.raises(MediaError, match="not an image: the file holds mp4"):
        probe(path.read_bytes(), "clip.jpg", "image")


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x00\x00\x00\x20ftypisom", "mp4"), (b"\x1a\x45\xdf\xa3\x01", "matroska"),
    (b"RIFF\0\0\0\0AVI LIST", "avi"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "webp"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF89a", "gif"), (b"hello world", None),
])
def test_sniff_format(head, expected):
    assert sniff_format(head) == expected


def test_mp4_box_walk_finds_truncation(make_video):
    path, _ = make_video(num_frames=16)
    data = path.read_bytes()
    assert check_mp4_boxes(data, len(data)) is None
    cut = data[: len(data) - 10]
    assert "file ends at" in check_mp4_boxes(cut, len(cut))
    moov = data.index(b"moov") - 4
    no_index = data[:moov]  # the writer puts 'moov' last: dropping it loses the index only
    assert "no 'moov' box" in check_mp4_boxes(no_index, len(no_index))
