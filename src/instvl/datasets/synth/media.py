"""Encoding InstVL-Synth frames: H.264 MP4 in memory through PyAV's libx264, and JPEG through Pillow.

Both encoders are deterministic here (one x264 thread, no timestamps in the container), so the same
frames always give the same bytes.
"""

import io
from fractions import Fraction
from typing import Any

from numpy.typing import NDArray
from PIL import Image

from instvl.deps import require


def encode_mp4(frames: NDArray[Any], fps: float, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 RGB frames (even H and W) -> MP4 bytes, H.264 yuv420p."""
    t_count, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
    av = require("av", "video")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # ultrafast keeps a 16-frame 128x128 clip at a few milliseconds; one thread keeps bytes reproducible.
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def encode_jpeg(frame: NDArray[Any], quality: int = 92) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
