"""Clip-level media: sample annotation frames from a ClipSpec, and encode a clip for a shard row.

    media = fetch_media(spec.uri)                                    # once per file, shared by its clips
    clip = sample_frames(spec, media, num=16, max_short_side=480)    # DecodedClip: (T, H, W, 3) uint8
    data, media_format = clip_media(spec, cfg, media, video=out.video)  # H.264 MP4 of the span, or the image
    width, height = stored_size(spec, cfg)                           # what those bytes decode to

Two sizes: the annotation frames (`ingest.max_short_side`, what detector, tracker and captioner see) and
the stored rendition (`ingest.store_short_side` for clips, `store_image_short_side` for images: what
the row embeds and the trainer decodes). A row's width and height are the stored rendition's; its
boxes are normalised, so they hold at both sizes.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instvl.media.decode import (
    DecoderName,
    decode_frames,
    exif_orientation,
    iter_pyav_frames,
    load_image,
    resize_frame,
    scaled_size,
)
from instvl.media.encode import VideoEncodingConfig, encode_image, mp4_size
from instvl.media.fetch import Media, MediaError, read_bytes, read_head
from instvl.media.ingest import ClipSpec, Failure, IngestConfig
from instvl.media.probe import sniff_format

log = logging.getLogger(__name__)

_EMBED_AS_IS = ("jpeg", "png", "webp")


@dataclass(slots=True)
class DecodedClip:
    """Frames decoded from one clip: `source_frames` are their frame numbers in the source video.

    With dense tracking (`decode_clip(track_fps=...)`) `frames` are the frames to track on and `stored`
    the positions among them of the sampled frames, the ones a row stores and captions see; None: all.
    """

    spec: ClipSpec
    source_frames: NDArray[Any]
    frames: NDArray[Any]
    decoder: str
    stored: NDArray[Any] | None = None

    @property
    def clip_frames(self) -> NDArray[Any]:
        """The frame numbers relative to the clip's first frame (what shard trajectories store)."""
        return self.source_frames - self.spec.start_frame

    @property
    def store(self) -> NDArray[Any]:
        """Positions among `frames` of the stored (sampled) frames."""
        return np.arange(len(self.frames)) if self.stored is None else self.stored

    @property
    def sampled_frames(self) -> NDArray[Any]:
        return self.frames if self.stored is None else self.frames[self.stored]

    @property
    def sampled_clip_frames(self) -> NDArray[Any]:
        return self.clip_frames if self.stored is None else self.clip_frames[self.stored]


def sample_indices(start: int, end: int, num: int | None = None, stride: int | None = None) -> NDArray[Any]:
    """Every `stride`-th frame of [start, end), thinned to `num` evenly spread frames when there are more."""
    if end <= start:
        raise ValueError(f"empty frame span [{start}, {end})")
    candidates = np.arange(start, end, max(1, stride or 1), dtype=np.int64)
    if num is None or len(candidates) <= num:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, num).round().astype(np.int64)
    return candidates[picks]


def sample_frames(spec: ClipSpec, media: Media, num: int | None = 16, stride: int | None = None, *,
                  max_short_side: int | None = None, decoder: DecoderName = "auto",
                  timeout_s: float = 60.0) -> DecodedClip:
    """Decode a clip's sampled frames from its fetched media (an image gives one frame); raises MediaError."""
    if spec.media_type == "image":
        frame = resize_frame(load_image(media, spec.uri), max_short_side)
        return DecodedClip(spec, np.zeros(1, np.int64), frame[None], "pillow")
    indices = sample_indices(spec.start_frame, spec.end_frame, num, stride)
    decoded = decode_frames(media, spec.uri, indices, decoder=decoder, max_short_side=max_short_side,
                            timeout_s=timeout_s)
    return DecodedClip(spec, indices, decoded.frames, decoded.decoder)


def decode_clip(spec: ClipSpec, cfg: IngestConfig, media: Media, *,
                track_fps: float | None = None) -> DecodedClip | Failure:
    """`sample_frames` with the config's sampling settings; a bad file becomes a Failure, not an error.

    With `track_fps` (a video's `trajectories.track_fps`) the frames at that rate are decoded too: the
    clip's `frames` are the union to track on, `stored` marks the sampled ones among them."""
    stride = None
    if cfg.sample_fps and spec.fps:
        stride = max(1, round(spec.fps / cfg.sample_fps))
    try:
        clip = sample_frames(spec, media, cfg.num_frames, stride, max_short_side=cfg.max_short_side,
                             decoder=cfg.decoder, timeout_s=cfg.worker_timeout_s)
        if not track_fps or spec.media_type == "image" or not spec.fps:
            return clip
        dense = np.union1d(sample_indices(spec.start_frame, spec.end_frame,
                                          stride=max(1, round(spec.fps / track_fps))), clip.source_frames)
        if len(dense) == len(clip.source_frames):
            return clip  # tracking rate no denser than the sampling
        decoded = decode_frames(media, spec.uri, dense, decoder=cfg.decoder,
                                max_short_side=cfg.max_short_side, timeout_s=cfg.worker_timeout_s)
        return DecodedClip(spec, dense, decoded.frames, decoded.decoder,
                           stored=np.searchsorted(dense, clip.source_frames))
    except MediaError as err:
        log.warning("cannot decode %s [%d, %d): %s", spec.uri, spec.start_frame, spec.end_frame, err.reason)
        return Failure(spec.uri, "decode", err.reason)


def clip_media(spec: ClipSpec, cfg: IngestConfig, media: Media, *,
               video: VideoEncodingConfig | None = None) -> tuple[bytes, str]:
    """Bytes to embed in the shard row and their format: the clip re-encoded as MP4, or the image.

    Both are the stored rendition: short side at most `cfg.store_side(...)`, `stored_size(spec, cfg)`.
    A clip is encoded with `video` (the annotate config's `out.video`; None: its defaults, short GOPs so
    the trainer reaches any frame cheaply). Images keep their original bytes when already JPEG/PNG/WebP,
    small enough and upright; others are re-encoded once (upright, without orientation metadata). Raises
    MediaError on unreadable input.
    """
    if spec.media_type == "image":
        return _image_media(media, spec, cfg.store_side("image"))
    frames = _span_frames(media, spec, cfg.store_side("video"))
    try:
        return (video or VideoEncodingConfig()).encode(frames, spec.fps or 30.0), "mp4"
    except ValueError as err:
        raise MediaError(spec.uri, f"no frames in [{spec.start_frame}, {spec.end_frame}): {err}",
                         stage="decode") from err


def stored_size(spec: ClipSpec, cfg: IngestConfig) -> tuple[int, int]:
    """(width, height) of the media `clip_media` embeds for `spec`: the source shrunk to
    `cfg.store_side(spec.media_type)` (a video's to even sizes, as H.264 needs). A row's width and height,
    and its masks, are this size."""
    width, height = scaled_size(spec.width, spec.height, cfg.store_side(spec.media_type))
    return mp4_size(width, height) if spec.media_type == "video" else (width, height)


def _span_frames(media: Media, spec: ClipSpec, max_short_side: int | None) -> Iterable[NDArray[Any]]:
    """Every frame of the clip span, failing if the stream ends early (a short clip would be wrong)."""
    count = 0
    for _, frame in iter_pyav_frames(media, spec.uri, spec.start_frame, spec.end_frame):
        count += 1
        yield resize_frame(frame.to_ndarray(format="rgb24"), max_short_side)
    if count < spec.num_frames:
        raise MediaError(spec.uri, f"truncated: clip [{spec.start_frame}, {spec.end_frame}) has only "
                                   f"{count} of {spec.num_frames} frames", stage="decode")


def _image_media(media: Media, spec: ClipSpec, max_short_side: int | None) -> tuple[bytes, str]:
    """The image's own bytes when they can be embedded as they are, else its upright pixels re-encoded.

    Bytes with an EXIF orientation other than 1 are never embedded as they are: every reader of the row
    must see the same upright pixels that width, height and the boxes were taken from.
    """
    found = sniff_format(read_head(media))
    fits = scaled_size(spec.width, spec.height, max_short_side) == (spec.width, spec.height)
    if found in _EMBED_AS_IS and fits and exif_orientation(media, spec.uri) == 1:
        return read_bytes(media), found
    pixels = resize_frame(load_image(media, spec.uri), max_short_side)
    kept = found if found in _EMBED_AS_IS and fits else "jpeg"  # a rotated PNG stays lossless
    return encode_image(pixels, kept), kept
