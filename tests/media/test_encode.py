"""Encoding: MP4 bytes with even sizes and the index first, images without orientation metadata."""

import io

import numpy as np
import pytest
from PIL import Image

from instvl.media.encode import encode_image, encode_mp4, mp4_size


def decode_all(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_mp4_is_faststart_and_rounds_odd_sizes_down():
    frames = np.random.default_rng(0).integers(0, 256, (5, 49, 65, 3), np.uint8)
    data = encode_mp4(frames, fps=5)
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
    assert decode_all(data).shape == (5, 48, 64, 3) and mp4_size(65, 49) == (64, 48)
    assert mp4_size(1, 1) == (2, 2)
    with pytest.raises(ValueError, match="at least one frame"):
        encode_mp4([], fps=5)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_image_bytes_hold_the_frame_as_given(fmt):
    frame = np.zeros((20, 30, 3), np.uint8)
    frame[:5, :10] = (255, 0, 0)
    with Image.open(io.BytesIO(encode_image(frame, fmt))) as image:
        assert image.format.lower() == fmt and image.size == (30, 20)
        assert image.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(pixels - frame).mean() < (0.5 if fmt == "png" else 3)
