"""Encode RGB frames for a shard row or a render: H.264 MP4 (faststart) or a still image.

    data = encode_mp4(frames, fps=8.0)          # (T, H, W, 3) uint8 frames -> MP4 bytes
    data = encode_mp4(frames, 30.0, keyint=32, bframes=3)   # random access for the trainer
    data = VideoEncodingConfig().encode(frames, 30.0)  # a shard row's clip, with the config's settings
    data = encode_image(frame, "jpeg")          # (H, W, 3) uint8 -> JPEG bytes (no EXIF: upright as given)
"""

import io
import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from instvl.config import BaseConfig


class VideoEncodingConfig(BaseConfig):
    """How a clip is stored in a shard row (H.264 MP4): quality, and how cheaply the trainer reaches a frame.

    The trainer decodes a few frames per clip (16 of ~300): a frame costs decoding the keyframe before it
    and the reference frames between them (`media.decode` skips the rest), and decoding time follows the
    bytes decoded. The picture size (`ingest.max_short_side`) matters most: at 480p a sample takes 0.12 s
    of one core, at 720p 0.27-0.30 s whatever the GOP (`docs/BENCHMARKS.md`, loader section).
    """

    crf: int = Field(23, ge=0, le=51)
    """libx264 quality (lower is better and larger)."""
    preset: str = "veryfast"
    """libx264 speed preset: slower presets are smaller at the same quality but take longer to encode."""
    keyint: int | None = Field(64, ge=1)
    """Keyframes at most this many frames apart (more at scene cuts); null: x264's 250. Reaching a frame
    takes decoding its keyframe and the reference frames after it, so a short interval bounds that on long
    clips, but keyframes are large (decoding costs about its bytes): on 10-s 30-fps clips 16 and 32 give
    no faster sampling than 64 and are 1.9x and 1.3x larger, 250 is 20% smaller."""
    bframes: int | None = Field(3, ge=0, le=16)
    """B-frames between reference frames, never used as references themselves (no B-pyramid), so a
    reader skips the ones it does not want; null: x264's default (3, the middle one a reference)."""

    def encode(self, frames: Iterable[NDArray[Any]], fps: float) -> bytes:
        """The frames as MP4 bytes with these settings."""
        return encode_mp4(frames, fps, self.crf, self.preset, keyint=self.keyint, bframes=self.bframes)


def mp4_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) of an MP4 of frames this size: yuv420p needs even sizes, odd ones round down."""
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


def encode_mp4(frames: Iterable[NDArray[Any]], fps: float, crf: int = 23, preset: str = "veryfast", *,
               keyint: int | None = None, bframes: int | None = None) -> bytes:
    """Encode RGB uint8 frames as an H.264 (yuv420p) MP4 with the index first (faststart).

    `keyint`: keyframes at most this many frames apart; `bframes`: B-frames between references, none of
    them a reference (`VideoEncodingConfig` says why); None leaves x264's defaults.
    """
    options: dict[str, object] = {"crf": str(crf), "preset": preset}
    params = [f"keyint={keyint}"] if keyint is not None else []
    if bframes is not None:
        params += [f"bframes={bframes}", "b-pyramid=none"]
    if params:
        options["x264-params"] = ":".join(params)
    # faststart rewrites the file by name in a second pass, so it cannot target a BytesIO
    with tempfile.TemporaryDirectory(prefix="instvl-encode-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        _encode_to(path, frames, fps, options)
        with open(path, "rb") as f:
            return f.read()


def _encode_to(path: str, frames: Iterable[NDArray[Any]], fps: float, options: dict[str, object]) -> None:
    import av

    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                # rescaling (not cropping) to even sizes keeps normalised boxes valid
                stream.width, stream.height = mp4_size(frame.shape[1], frame.shape[0])
                stream.pix_fmt, stream.options = "yuv420p", options
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                video_frame = video_frame.reformat(width=stream.width, height=stream.height)
            container.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError("encode_mp4 needs at least one frame")
        container.mux(stream.encode())


def encode_image(frame: NDArray[Any], format: str = "jpeg", quality: int = 95) -> bytes:
    """One (H, W, 3) uint8 RGB frame as image bytes (JPEG, PNG or WebP), without orientation metadata."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {} if format == "png" else {"quality": quality}
    Image.fromarray(frame).save(buffer, format=format.upper(), **options)
    return buffer.getvalue()
