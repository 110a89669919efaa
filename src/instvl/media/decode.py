"""Decode frames of media into RGB arrays: one function for videos and images, one error type.

    decoded = decode_frames(media, uri, [0, 8, 15], decoder="pyav", on_missing="repeat")
    decoded.frames                 # (3, H, W, 3) uint8 RGB; decoded.indices, decoded.decoder
    image = load_image(media, uri)  # (H, W, 3) uint8 RGB, always EXIF-transposed (upright)

Videos decode with decord in a restartable worker process (`media.worker`: decord can crash its process
on corrupt input) or with PyAV in-process, which never crashed in fuzzing and runs with the default
log level and slice threading (setting a log level while frame threading is on deadlocks on corrupt
input). decord is only given file paths (bytes go through a temporary file): from a BytesIO it crashes
far more often. Images decode with Pillow and are always turned upright by their EXIF orientation, so
every reader of a photo (annotation, shard bytes, training, reports) sees the same pixels and size.
Every failure is a `MediaError` with stage "decode".
"""

import bisect
import logging
import os
import tempfile
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from instvl.deps import is_available, require
from instvl.log import warn_once
from instvl.media.fetch import Media, MediaError, as_file, read_head
from instvl.media.probe import IMAGE_FORMATS, sniff_format
from instvl.media.worker import DecodeWorker, default_worker

log = logging.getLogger(__name__)

DecoderName = Literal["auto", "decord", "pyav"]
"""auto: decord in the worker process, PyAV when decord fails or is not installed."""
OnMissing = Literal["raise", "repeat", "drop"]
"""What a requested frame the media does not hold becomes: an error, the nearest earlier frame, or nothing."""
Quality = Literal["exact", "fast", "draft"]
"""How closely PyAV and Pillow decode (decord always decodes exactly).
exact: the pictures at full size, shrunk with OpenCV's area filter (the same pixels from every decoder).
fast: the same decoded pictures, shrunk while converting to RGB (FFmpeg's area filter) and JPEGs decoded
  straight at 1/2, 1/4 or 1/8 size (Pillow's draft mode): only the resampling differs (PSNR 43 dB
  against exact on the loader bench's 720p clips at short side 224; less on pixel-level noise).
draft: as fast, and H.264's deblocking (loop) filter is skipped: its error drifts through the frames
  predicted from each other until the next keyframe (26-30 dB on the worst frame of those clips)."""
_SEEK_AFTER_FRAMES = 48  # below this, decoding from the start is cheaper than a seek
_ORIENTATION_TAG = 0x0112  # EXIF


@dataclass(frozen=True, slots=True)
class DecodedFrames:
    """Frames (T, H, W, 3) uint8 RGB at `indices` (the requested ones; without the missing after 'drop')."""

    indices: NDArray[Any]
    frames: NDArray[Any]
    decoder: str


def scaled_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) after shrinking so the short side is at most max_short_side (never enlarged)."""
    if not max_short_side or min(width, height) <= max_short_side:
        return width, height
    scale = max_short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_frame(frame: NDArray[Any], max_short_side: int | None) -> NDArray[Any]:
    """One (H, W, 3) frame shrunk with area interpolation (the same for every decoder)."""
    size = scaled_size(frame.shape[1], frame.shape[0], max_short_side)
    if size == (frame.shape[1], frame.shape[0]):
        return frame
    cv2 = require("cv2", "video")
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def resize_to(image: NDArray[Any], width: int, height: int) -> NDArray[Any]:
    """An (h, w, 3) uint8 picture at (width, height): area averaging to shrink, bilinear to enlarge."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    cv2 = require("cv2", "video")
    shrink = width < image.shape[1] and height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_short_side(frames: NDArray[Any], max_short_side: int | None) -> NDArray[Any]:
    """(T, H, W, 3) frames shrunk so min(H, W) <= max_short_side."""
    if scaled_size(frames.shape[2], frames.shape[1], max_short_side) == (frames.shape[2], frames.shape[1]):
        return frames
    return np.stack([resize_frame(f, max_short_side) for f in frames])


def decord_batch(path: str, indices: list[int],
                 max_short_side: int | None) -> tuple[list[int], NDArray[Any] | None]:
    """The indices the video holds and their frames, with decord (runs inside the worker process)."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    held = [i for i in indices if i < len(reader)]
    if not held:
        return held, None
    try:
        frames = reader.get_batch(held).asnumpy()
    except decord.DECORDError as err:
        if _PADDED_ROWS_ERROR not in str(err):
            raise
        frames = np.stack([unpad_rows(reader[i].asnumpy()) for i in held])
    return held, resize_short_side(frames, max_short_side)


# decord 0.6 keeps FFmpeg's row padding (rows are 32-pixel aligned) and takes padded-row bytes / width as
# the channel count. When that division is exact but not 3 (widths 2-8, 12, 16, 24, 48, 72), a frame comes
# back as (H, W, 4..12) and `get_batch` fails copying it into its (N, H, W, 3) buffer with this check.
_PADDED_ROWS_ERROR = "DECORDArrayCopyFromTo"


def unpad_rows(frame: NDArray[Any]) -> NDArray[Any]:
    """An (H, W, C > 3) decord frame whose C counts row padding, as the (H, W, 3) RGB picture it holds."""
    height, width, channels = frame.shape
    if channels == 3:
        return frame
    rows = frame.reshape(height, width * channels)[:, : width * 3]
    return np.ascontiguousarray(rows).reshape(height, width, 3)


def decord_frames(media: Media, uri: str, indices: Sequence[int], max_short_side: int | None = None,
                  timeout_s: float = 60.0, worker: DecodeWorker | None = None) -> dict[int, NDArray[Any]]:
    """{index: frame} of the `indices` the video holds, decoded by decord in the worker process.

    decord is fed a path: bytes are written to a temporary file first.
    """
    worker = worker or default_worker()
    wanted = [int(i) for i in indices]
    if isinstance(media, str):
        held, frames = worker.call(decord_batch, media, wanted, max_short_side, uri=uri, timeout_s=timeout_s)
    else:
        suffix = os.path.splitext(uri)[1] or ".mp4"
        with tempfile.NamedTemporaryFile(suffix=suffix, prefix="instvl-decode-") as tmp:
            tmp.write(media)
            tmp.flush()
            held, frames = worker.call(decord_batch, tmp.name, wanted, max_short_side, uri=uri,
                                       timeout_s=timeout_s)
    return dict(zip(held, frames, strict=True)) if held else {}


def iter_pyav_frames(media: Media, uri: str, first: int = 0, stop: int | None = None, *,
                     wanted: Collection[int] | None = None,
                     skip_loop_filter: bool = False) -> Iterator[tuple[int, Any]]:
    """(frame index, av.VideoFrame) from `first` up to `stop` (exclusive), seeking when it pays off.

    With `wanted`, only those frames are sure to come: a frame outside it that no other frame is
    predicted from is not decoded (see `_sparse`), which leaves every frame that is decoded bit-exact.
    `skip_loop_filter` skips the deblocking filter: faster, approximate pixels ("draft" quality).
    """
    import av

    errors = (av.FFmpegError, UnicodeDecodeError, OSError)
    try:
        container = av.open(as_file(media), metadata_errors="replace")
    except errors as err:
        raise MediaError(uri, f"cannot open as a video: {err}", stage="decode") from err
    index = None
    try:
        with container:
            if not container.streams.video:
                raise MediaError(uri, "not a video: no video stream", stage="decode")
            stream = container.streams.video[0]
            if skip_loop_filter:
                stream.codec_context.options = {"skip_loop_filter": "all"}
            for index, frame in _indexed(container, stream, first, wanted):
                if stop is not None and index >= stop:
                    return
                if index >= first:
                    yield index, frame
    except errors as err:
        where = "before the first frame" if index is None else f"after frame {index}"
        raise MediaError(uri, f"truncated: decoding stopped {where}: {err}", stage="decode") from err
    except ValueError as err:
        raise MediaError(uri, f"cannot seek to frame {first}: {err}", stage="decode") from err


def _indexed(container: Any, stream: Any, first: int,
             wanted: Collection[int] | None) -> Iterator[tuple[int, Any]]:
    """Frames with their presentation index: counted from 0, or derived from pts after a seek.

    With `wanted` (and timestamps), frames from the start are indexed by the rank of their pts instead,
    which counts the frames the decoder is told to skip too.
    """
    rate = stream.average_rate or stream.guessed_rate
    if first < _SEEK_AFTER_FRAMES or not rate or stream.time_base is None:
        if wanted is None:
            yield from enumerate(container.decode(stream))
        else:
            yield from _sparse(stream, _ranked(container.demux(stream)), wanted)
        return
    fps, origin = float(rate), stream.start_time or 0
    # seek lands on the keyframe at or before the target; one frame of margin absorbs rounding
    container.seek(origin + int((first - 1) / fps / stream.time_base), stream=stream)

    def index_of(pts: int | None) -> int:
        if pts is None:
            raise ValueError("frames without timestamps cannot be seeked; decode from the start")
        return round(float((pts - origin) * stream.time_base) * fps)

    if wanted is None:
        for frame in container.decode(stream):
            yield index_of(frame.pts), frame
        return
    packets = ((packet, None if packet.pts is None else index_of(packet.pts))
               for packet in container.demux(stream))
    yield from _sparse(stream, packets, wanted, index_of)


_MAX_REORDER = 32  # packets: more than any codec delays a frame's presentation (H.264 allows 16)


def _ranked(packets: Iterable[Any]) -> Iterator[tuple[Any, int | None]]:
    """Packets in decode order, each with the presentation index of its frame: the rank of its pts.

    A packet's rank is final once a packet decoded at or after its pts has been read (pts >= dts and dts
    only grows, so no later packet is shown before it), or after `_MAX_REORDER` more packets. A packet
    without pts (the final flush packet) or whose frame the decoder drops (before an edit list's start)
    gets None and is not counted, as the decoder does not output its frame.
    """
    shown: list[int] = []  # sorted pts of the counted packets read so far
    pending: deque[Any] = deque()

    def release() -> tuple[Any, int | None]:
        done = pending.popleft()
        counted = done.pts is not None and not done.is_discard
        return done, bisect.bisect_left(shown, done.pts) if counted else None

    for packet in packets:
        if packet.pts is not None and not packet.is_discard:
            bisect.insort(shown, packet.pts)
        pending.append(packet)
        if packet.pts is None and packet.size == 0:  # flush: the stream ended
            break
        while pending and (len(pending) > _MAX_REORDER or pending[0].pts is None or
                           (packet.dts is not None and packet.dts >= pending[0].pts)):
            yield release()
    while pending:
        yield release()


class _Untimed(Exception):
    """A frame came without a timestamp, so the frames the decoder skipped cannot be counted."""


def _sparse(stream: Any, packets: Iterable[tuple[Any, int | None]], wanted: Collection[int],
            index_of: Any = None) -> Iterator[tuple[int, Any]]:
    """Frames decoded from (packet, index) pairs; frames no wanted frame needs are not decoded.

    A packet is held back until a wanted packet follows it in the same GOP (decode order: every frame
    is predicted only from frames decoded before it), and dropped when the next keyframe comes first,
    so a GOP is decoded only up to its last wanted frame and a GOP without one not at all. An open GOP's
    leading pictures (shown before their keyframe, predicted from the previous GOP) bring the held-back
    tail of that GOP with them when one of them is wanted. Among the packets that are decoded, the
    decoder's skip_frame is switched per packet: NONREF drops a frame only when no other frame is
    predicted from it (H.264/HEVC nal_ref_idc, MPEG B-frames). Every decoded frame is bit-exact; a
    decoder that ignores skip_frame decodes more. Frames are indexed by their pts: through the packets'
    indices (rank of pts) or `index_of(pts)` after a seek.
    """
    codec = stream.codec_context
    index_by_pts: dict[int, int] = {}
    skipping = started = dropped = False  # dropped: packets were left out since the last one decoded
    held: list[tuple[Any, int | None]] = []  # this GOP's packets since its last wanted one
    previous: list[tuple[Any, int | None]] = []  # the previous GOP's tail, for open-GOP leading pictures
    keyframe_index: int | None = None
    waiting = False  # the keyframe is wanted: whether its leading pictures need `previous` is not known yet
    remaining = set(wanted)  # wanted frames not yet sent to the decoder

    def send(batch: list[tuple[Any, int | None]]) -> Iterator[tuple[int, Any]]:
        nonlocal skipping, started, dropped
        if dropped and started:
            # as after a seek: take the frames the decoder holds, then restart it at the keyframe
            # (a non-IDR keyframe does not reset H.264's picture order count and frame numbers)
            for frame in codec.decode(None):
                yield _frame_index(frame, index_by_pts, index_of), frame
            codec.flush_buffers()
        dropped = False
        for fed, fed_index in batch:
            skip = fed_index is not None and fed_index not in wanted
            if skip != skipping:
                codec.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
            remaining.discard(fed_index)
            started = True
            for frame in codec.decode(fed):
                yield _frame_index(frame, index_by_pts, index_of), frame

    for packet, index in packets:
        if index is not None and packet.pts is not None:
            index_by_pts[packet.pts] = index
        if packet.size and packet.pts is None:
            raise _Untimed("a packet without a timestamp")
        leading = bool(packet.size) and not packet.is_keyframe and keyframe_index is not None and \
            index is not None and index < keyframe_index
        if waiting and not leading:  # the keyframe's leading pictures are over, none of them wanted
            dropped, previous, waiting = dropped or bool(previous), [], False
            yield from send(held)
            held = []
        if packet.is_keyframe:
            dropped |= bool(previous)
            previous, held, keyframe_index = held, [], index
        if not packet.size:  # the flush packet: the stream ended
            yield from send([(packet, index)])
            return
        held.append((packet, index))
        if index is None or index not in wanted:
            continue
        if leading:
            batch, previous, held, waiting = [*previous, *held], [], [], False
        elif previous and packet.is_keyframe:
            waiting = True
            continue
        else:
            batch, dropped, previous, held = held, dropped or bool(previous), [], []
        yield from send(batch)
        if not remaining:  # drain the frames the decoder still holds rather than demux to the end
            for frame in codec.decode(None):
                yield _frame_index(frame, index_by_pts, index_of), frame
            return


def _frame_index(frame: Any, index_by_pts: dict[int, int], index_of: Any) -> int:
    if index_of is not None:
        return int(index_of(frame.pts))
    if frame.pts in index_by_pts:
        return index_by_pts[frame.pts]
    raise _Untimed("a frame without a known timestamp")


def pyav_frames(media: Media, uri: str, indices: Sequence[int], max_short_side: int | None = None,
                partial: bool = False, quality: Quality = "exact") -> dict[int, NDArray[Any]]:
    """{index: frame} of the `indices` the video holds, decoded in-process.

    Only the reference frames (those others are predicted from) and the wanted frames are decoded.
    A stream that breaks off midway raises, unless `partial` and some wanted frames came before the break.
    """
    wanted = {int(i) for i in indices}
    try:
        return _pyav_collect(media, uri, wanted, max_short_side, partial, quality, sparse=True)
    except _Untimed:  # e.g. a raw elementary stream: decode every frame and count them
        return _pyav_collect(media, uri, wanted, max_short_side, partial, quality, sparse=False)


def _pyav_collect(media: Media, uri: str, wanted: set[int], max_short_side: int | None, partial: bool,
                  quality: Quality, sparse: bool) -> dict[int, NDArray[Any]]:
    found: dict[int, NDArray[Any]] = {}
    try:
        for index, frame in iter_pyav_frames(media, uri, min(wanted), max(wanted) + 1,
                                             wanted=wanted if sparse else None,
                                             skip_loop_filter=quality == "draft"):
            if index in wanted:
                found[index] = _frame_rgb(frame, max_short_side, quality)
    except MediaError:
        if not (partial and found):
            raise
    return found


def _frame_rgb(frame: Any, max_short_side: int | None, quality: Quality) -> NDArray[Any]:
    """An av.VideoFrame as (H, W, 3) RGB at most max_short_side on its short side."""
    if quality == "exact":
        return resize_frame(frame.to_ndarray(format="rgb24"), max_short_side)
    width, height = scaled_size(frame.width, frame.height, max_short_side)
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def decode_frames(media: Media, uri: str, indices: Sequence[int] | NDArray[Any], *,
                  decoder: DecoderName = "auto", max_short_side: int | None = None,
                  on_missing: OnMissing = "raise", timeout_s: float = 60.0,
                  quality: Quality = "exact") -> DecodedFrames:
    """Frames at `indices` (any order, repeats allowed) of a video, or frame 0 of an image.

    A requested frame the media does not hold (past the end of a short or truncated stream, or any
    frame but 0 of an image) raises with on_missing="raise", is filled with the nearest earlier
    decoded frame with "repeat", or left out with "drop". `quality` trades pixels for speed (`Quality`;
    PyAV and Pillow only). Raises MediaError (stage "decode") when the media cannot be read or no
    requested frame decodes.
    """
    wanted = [int(i) for i in indices]
    if not wanted or min(wanted) < 0:
        raise ValueError(f"{uri}: frame indices must be a non-empty list of indices >= 0, got {wanted[:5]}")
    if sniff_format(read_head(media)) in IMAGE_FORMATS:
        draft_side = max_short_side if quality != "exact" else None
        found, used = {0: resize_frame(load_image(media, uri, draft_side), max_short_side)}, "pillow"
    else:
        targets = sorted(set(wanted))
        found, used = _video_frames(media, uri, targets, decoder, max_short_side, timeout_s, on_missing,
                                    quality)
    return _assemble(uri, wanted, found, used, on_missing)


def _assemble(uri: str, wanted: list[int], found: dict[int, NDArray[Any]], decoder: str,
              on_missing: OnMissing) -> DecodedFrames:
    """The wanted frames in order, the missing ones raised, repeated or dropped."""
    missing = [i for i in wanted if i not in found]
    if missing and (on_missing == "raise" or not found):
        if decoder == "pillow":
            raise MediaError(uri, f"an image has only frame 0, frame {missing[0]} requested", stage="decode")
        raise MediaError(uri, f"truncated: frame {missing[0]} requested, the stream ends before it",
                         stage="decode")
    if on_missing == "drop":
        wanted = [i for i in wanted if i in found]
    elif missing:
        known = sorted(found)
        found = {**found, **{i: found[_nearest_before(known, i)] for i in missing}}
    return DecodedFrames(np.asarray(wanted, np.int64), np.stack([found[i] for i in wanted]), decoder)


def _nearest_before(known: list[int], index: int) -> int:
    """The last decoded index at or before `index` (the first decoded one when none is)."""
    before = [k for k in known if k <= index]
    return before[-1] if before else known[0]


def _video_frames(media: Media, uri: str, targets: list[int], decoder: DecoderName,
                  max_short_side: int | None, timeout_s: float, on_missing: OnMissing,
                  quality: Quality = "exact") -> tuple[dict[int, NDArray[Any]], str]:
    """The frames at sorted, distinct `targets` that the video holds, and the decoder that gave them."""
    partial = on_missing != "raise"
    if decoder == "pyav" or (decoder == "auto" and not is_available("decord")):
        if decoder == "auto":
            warn_once(log, "decord is not installed: decoding with PyAV")
        return pyav_frames(media, uri, targets, max_short_side, partial, quality), "pyav"
    if decoder == "decord":
        require("decord", "video")
        return decord_frames(media, uri, targets, max_short_side, timeout_s), "decord"
    try:
        found = decord_frames(media, uri, targets, max_short_side, timeout_s)
        if partial or len(found) == len(targets):
            return found, "decord"
        reason = f"truncated: decord has no frame {next(i for i in targets if i not in found)}"
    except MediaError as decord_err:
        reason = decord_err.reason
    log.warning("decord failed on %s (%s); retrying with PyAV", uri, reason)
    try:
        return pyav_frames(media, uri, targets, max_short_side, partial, quality), "pyav"
    except MediaError as err:
        raise MediaError(uri, f"{err.reason} (decord: {reason})", stage="decode") from err


def load_image(media: Media, uri: str, draft_short_side: int | None = None) -> NDArray[Any]:
    """An image as (H, W, 3) uint8 RGB, turned upright by its EXIF orientation.

    With `draft_short_side`, a JPEG whose short side is at least twice that is decoded straight at
    1/2, 1/4 or 1/8 size (Pillow's draft mode: scaled IDCT), keeping the short side >= draft_short_side;
    the caller still shrinks it to the exact size.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(as_file(media)) as img:
            if draft_short_side and img.format == "JPEG":
                # the short side is the same before and after the EXIF turn
                img.draft(None, scaled_size(img.width, img.height, draft_short_side))
            # in place and no RGB-to-RGB convert: two copies fewer (a quarter of a stored image's decode)
            ImageOps.exif_transpose(img, in_place=True)
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(uri, f"not a readable image: {err}", stage="decode") from err


def exif_orientation(media: Media, uri: str) -> int:
    """The image's EXIF orientation (1: stored upright, 2-8: `load_image` flips or turns it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(as_file(media)) as img:
            return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(uri, f"not a readable image: {err}", stage="decode") from err


def media_of(row: Mapping[str, Any]) -> Media | None:
    """A shard row's embedded media bytes, else its source uri when that is a local file, else None."""
    if row.get("media"):
        return row["media"]
    uri = (row.get("source") or {}).get("uri") or ""
    path = uri.removeprefix("file://")
    return path if path and "://" not in path and os.path.isfile(path) else None
