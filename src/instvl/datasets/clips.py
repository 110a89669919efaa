"""Clip-level media: sample annotation frames from a ClipSpec, and encode a clip for a shard row.

    clip = sample_frames(spec, num=16, max_short_side=480)   # DecodedClip: indices + (T, H, W, 3) uint8
    media, media_format = clip_media(spec)                   # H.264 MP4 bytes of the span, or image bytes
"""

import io
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from instvl.datasets.decode import (
    DecodeError,
    DecoderName,
    decode_frames,
    iter_pyav_frames,
    load_image,
    resize_frame,
    scaled_size,
)
from instvl.datasets.ingest import ClipSpec, Failure, IngestConfig
from instvl.datasets.probe import Media, MediaError, fetch_media, read_head, sniff_format

log = logging.getLogger(__name__)

_EMBED_AS_IS = ("jpeg", "png", "webp")


@dataclass(slots=True)
class DecodedClip:
    """Frames decoded from one clip: `frame_indices` are positions in the source video."""

    spec: ClipSpec
    frame_indices: np.ndarray
    frames: np.ndarray
    decoder: str

    @property
    def clip_frame_indices(self) -> np.ndarray:
        """Indices relative to the clip's first frame (what shard trajectories store)."""
        return self.frame_indices - self.spec.start_frame


def sample_indices(start: int, end: int, num: int | None = None, stride: int | None = None) -> np.ndarray:
    """Every `stride`-th frame of [start, end), thinned to `num` evenly spread frames when there are more."""
    if end <= start:
        raise ValueError(f"empty frame span [{start}, {end})")
    candidates = np.arange(start, end, max(1, stride or 1), dtype=np.int64)
    if num is None or len(candidates) <= num:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, num).round().astype(np.int64)
    return candidates[picks]


def sample_frames(spec: ClipSpec, num: int | None = 16, stride: int | None = None, *,
                  max_short_side: int | None = None, decoder: DecoderName = "auto",
                  timeout_s: float = 60.0, media: Media | None = None) -> DecodedClip:
    """Decode the sampled frames of a clip (an image gives one frame); raises DecodeError."""
    media = fetch_media(spec.uri) if media is None else media
    if spec.media_type == "image":
        frame = resize_frame(load_image(media, spec.uri), max_short_side)
        return DecodedClip(spec, np.zeros(1, np.int64), frame[None], "pillow")
    indices = sample_indices(spec.start_frame, spec.end_frame, num, stride)
    frames, used = decode_frames(media, spec.uri, indices, decoder, max_short_side, timeout_s)
    return DecodedClip(spec, indices, frames, used)


def decode_clip(spec: ClipSpec, cfg: IngestConfig | None = None) -> DecodedClip | Failure:
    """`sample_frames` with the config's sampling settings; a bad file becomes a Failure, not an error."""
    cfg = cfg or IngestConfig()
    stride = None
    if cfg.sample_fps and spec.fps:
        stride = max(1, round(spec.fps / cfg.sample_fps))
    try:
        return sample_frames(spec, cfg.num_frames, stride, max_short_side=cfg.max_short_side,
                             decoder=cfg.decoder, timeout_s=cfg.worker_timeout_s)
    except MediaError as err:
        log.warning("cannot decode %s [%d, %d): %s", spec.uri, spec.start_frame, spec.end_frame, err.reason)
        return Failure(spec.uri, "decode", err.reason)


def encode_mp4(frames: Iterable[np.ndarray], fps: float, crf: int = 23, preset: str = "veryfast") -> bytes:
    """Encode RGB uint8 frames as an H.264 (yuv420p) MP4 with the index first (faststart)."""
    # faststart rewrites the file by name in a second pass, so it cannot target a BytesIO
    with tempfile.TemporaryDirectory(prefix="instvl-encode-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        _encode_to(path, frames, fps, {"crf": str(crf), "preset": preset})
        with open(path, "rb") as f:
            return f.read()


def _encode_to(path: str, frames: Iterable[np.ndarray], fps: float, options: dict[str, str]) -> None:
    import av

    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                # yuv420p needs even sizes; rescaling (not cropping) keeps normalised boxes valid
                stream.width, stream.height = max(2, frame.shape[1] // 2 * 2), max(2, frame.shape[0] // 2 * 2)
                stream.pix_fmt, stream.options = "yuv420p", options
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                video_frame = video_frame.reformat(width=stream.width, height=stream.height)
            container.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError("encode_mp4 needs at least one frame")
        container.mux(stream.encode())


def clip_media(spec: ClipSpec, cfg: IngestConfig | None = None, media: Media | None = None) -> tuple[bytes, str]:
    """Bytes to embed in the shard row and their format: the clip re-encoded as MP4, or the image.

    Images keep their original bytes when already JPEG/PNG/WebP and small enough; others are re-encoded
    as JPEG. Raises DecodeError on unreadable input.
    """
    cfg = cfg or IngestConfig()
    media = fetch_media(spec.uri) if media is None else media
    if spec.media_type == "image":
        return _image_media(media, spec, cfg.max_short_side)
    frames = _span_frames(media, spec, cfg.max_short_side)
    try:
        return encode_mp4(frames, spec.fps or 30.0, crf=cfg.crf), "mp4"
    except ValueError as err:
        raise DecodeError(spec.uri, f"no frames in [{spec.start_frame}, {spec.end_frame}): {err}") from err


def _span_frames(media: Media, spec: ClipSpec, max_short_side: int | None) -> Iterable[np.ndarray]:
    """Every frame of the clip span, failing if the stream ends early (a short clip would be wrong)."""
    count = 0
    for _, frame in iter_pyav_frames(media, spec.uri, spec.start_frame, spec.end_frame):
        count += 1
        yield resize_frame(frame.to_ndarray(format="rgb24"), max_short_side)
    if count < spec.num_frames:
        raise DecodeError(spec.uri, f"truncated: clip [{spec.start_frame}, {spec.end_frame}) has only "
                                    f"{count} of {spec.num_frames} frames")


def _image_media(media: Media, spec: ClipSpec, max_short_side: int | None) -> tuple[bytes, str]:
    from PIL import Image

    found = sniff_format(read_head(media))
    fits = scaled_size(spec.width, spec.height, max_short_side) == (spec.width, spec.height)
    if found in _EMBED_AS_IS and fits:
        if isinstance(media, bytes):
            return media, found
        with open(media, "rb") as f:
            return f.read(), found
    pixels = resize_frame(load_image(media, spec.uri), max_short_side)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue(), "jpeg"
