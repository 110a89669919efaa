"""Probe one media file: what it is (video or image), its size, timing and codec, or why it is unusable.

A problem becomes a `MediaError(uri, reason)` whose reason says what is wrong ("zero-length file",
"not a video: ...", "truncated: ..."), never a decoder traceback.
"""

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instvl.media.fetch import Media, MediaError, as_file, media_size, read_head

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

IMAGE_FORMATS = ("jpeg", "png", "webp", "bmp", "gif", "tiff")
_MP4_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"moof", b"mfra", b"styp",
                  b"sidx", b"pdin", b"meta", b"udta", b"prft", b"emsg"}


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What probing found. For images fps/duration are None and num_frames is 1."""

    media_type: str
    width: int
    height: int
    num_frames: int
    codec: str
    container: str
    fps: float | None = None
    duration_s: float | None = None


def probe(media: Media, uri: str, media_type: str) -> MediaInfo:
    """Probe a file expected to be `media_type` ('video' or 'image'); raises MediaError."""
    size = media_size(media)
    if size == 0:
        raise MediaError(uri, "zero-length file")
    head = read_head(media)
    found = sniff_format(head)
    if media_type == "video":
        if found in IMAGE_FORMATS:
            raise MediaError(uri, f"not a video: the file holds a {found.upper()} image")
        if found == "mp4":
            problem = check_mp4_boxes(media, size)
            if problem:
                raise MediaError(uri, f"truncated: {problem}")
        return probe_video(media, uri, head)
    if found is not None and found not in IMAGE_FORMATS:
        raise MediaError(uri, f"not an image: the file holds {found} video data")
    return probe_image(media, uri)


def probe_video(media: Media, uri: str, head: bytes = b"") -> MediaInfo:
    """Container and stream facts through PyAV (header first, demux-only fallbacks; see A7)."""
    import av

    try:
        with av.open(as_file(media), "r", metadata_errors="replace") as container:
            return _video_info(container, uri)
    except MediaError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, OSError, ValueError) as err:
        known = sniff_format(head) if head else None
        if known is None:
            raise MediaError(uri, f"not a video: unrecognised data ({describe_head(head)}): {err}") from err
        raise MediaError(uri, f"corrupt {known} file: {err}") from err


def _video_info(container: "InputContainer", uri: str) -> MediaInfo:
    if container.format.name.endswith("_pipe") or container.format.name in ("gif", "image2"):
        raise MediaError(uri, f"not a video: the file holds a {container.format.name} image")
    if not container.streams.video:
        raise MediaError(uri, "not a video: no video stream (audio only or empty container)")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise MediaError(uri, "not a video: the video stream has no frame size")
    # raw streams have no container timing and average_rate falls back to 25; guessed_rate is right
    rate = stream.guessed_rate if container.duration is None else (stream.average_rate or stream.guessed_rate)
    fps = float(rate) if rate else None
    num_frames, duration = stream.frames, None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    if not num_frames or duration is None:
        num_frames, duration = _demux_count(container, stream, num_frames, duration)
    if not fps and duration:
        fps = num_frames / duration
    if not fps or num_frames <= 0:
        raise MediaError(uri, "not a video: no frames found in the video stream")
    duration = duration if duration else num_frames / fps
    codec = ctx.codec.canonical_name if ctx.codec else ctx.name
    return MediaInfo("video", ctx.width, ctx.height, int(num_frames), codec, container.format.name,
                     fps=fps, duration_s=duration)


def _demux_count(container: "InputContainer", stream: "VideoStream", num_frames: int,
                 duration: float | None) -> tuple[int, float | None]:
    """Count packets and their pts span without decoding (for containers whose header has no counts)."""
    count, first, last = 0, None, None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        count += 1
        if packet.pts is not None:
            first = packet.pts if first is None else min(first, packet.pts)
            last = packet.pts if last is None else max(last, packet.pts)
    if duration is None and first is not None and last is not None and stream.time_base and count > 1:
        duration = float((last - first) * stream.time_base) * count / (count - 1)
    return (num_frames or count), duration


def probe_image(media: Media, uri: str) -> MediaInfo:
    """Decode the image fully (so truncation shows) and report its size and format."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(as_file(media)) as img:
            img.load()
            fmt = (img.format or "unknown").lower()
            upright = ImageOps.exif_transpose(img)  # sizes as displayed, as decode.load_image returns pixels
            return MediaInfo("image", upright.width, upright.height, 1, fmt, fmt)
    except UnidentifiedImageError as err:
        raise MediaError(uri, f"not an image: unrecognised data ({describe_head(read_head(media))})") from err
    except OSError as err:
        if "truncated" in str(err):
            raise MediaError(uri, f"truncated: {err}") from err
        raise MediaError(uri, f"corrupt image: {err}") from err


def sniff_format(head: bytes) -> str | None:
    """The container a file's first bytes announce, or None when unrecognised."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WEBP"):
        return "avi" if head[8:12] == b"AVI " else "webp"
    signatures = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF8": "gif", b"BM": "bmp",
                  b"II*\x00": "tiff", b"MM\x00*": "tiff"}
    return next((name for magic, name in signatures.items() if head.startswith(magic)), None)


def describe_head(head: bytes) -> str:
    return f"starts with {head[:8].hex(' ')}" if head else "empty"


def check_mp4_boxes(media: Media, size: int) -> str | None:
    """Walk the top-level MP4 boxes: a box running past the end or a missing 'moov' means truncation."""
    offset, seen = 0, set()
    with (open(media, "rb") if isinstance(media, str) else io.BytesIO(media)) as f:
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_type not in _MP4_TOP_BOXES or box_size < 8:
                return None  # not a box we know how to walk: leave the verdict to the demuxer
            if offset + box_size > size:
                name = box_type.decode("latin-1")
                return f"'{name}' box needs {box_size} bytes at offset {offset} but the file ends at {size}"
            seen.add(box_type)
            offset += box_size
    if b"moov" not in seen and b"moof" not in seen:
        return "no 'moov' box: the index at the end of the file is missing"
    return None
