"""The media file a reviewer sees for a row: its clip or image taken again from the source file at the review
size, or else the rendition the row stores.

Rows store a training rendition (`media.clips.stored_size`: clips at a short side of 320 in the GPU
presets), smaller than the frames the annotation models saw, while reviewers judge the boxes and masks of
small objects. With `push.review_media: source` a row's media are therefore made again from its source
(`source.uri`: a local path or an fsspec URL, fetched by `media.fetch`):

- a clip: every source frame of [start, start + num_frames), start = round(clip_start_s * fps), read with
  the same call that made the stored clip (`media.decode.iter_pyav_frames`, as `media.clips.clip_media`)
  and encoded at the row's fps, so frame i of the review file is frame i of the stored clip, the clip
  frame i that trajectories count in (`datasets.records.FrameSpace.CLIP`);
- an image: its upright pixels (EXIF applied, as `media.decode.load_image` gives every reader).

Their short side is at most `push.review_height`, and a clip lower than that is scaled up to it (Label
Studio never draws a video larger than its own size). A source that cannot be used (missing, unreachable,
changed since annotation: its sha256 is not the row's, undecodable, or shorter than the clip) gives way
to the stored rendition, with a warning naming the sample and why; a push never fails for it.
`push.review_media: stored` always uses the stored rendition (a clip lower than `review_height` scaled up).

Files are written once to ROOT/media/ (`review_path`: <sample_id>.<ext> from the stored media,
<sample_id>.source<review_height>.<ext> from the source, so a file made one way is never taken for the
other), and `qa.push` links them into the review-media folder.
"""

import logging
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from numpy.typing import NDArray

from instvl.datasets import layout
from instvl.datasets.layout import atomic_write_bytes
from instvl.datasets.schema import SampleRow, SourceRow
from instvl.deps import require
from instvl.media.decode import iter_pyav_frames, load_image, resize_frame, scaled_size
from instvl.media.encode import encode_image, encode_mp4, mp4_size
from instvl.media.fetch import Media, MediaError, fetch_media, sha256_of
from instvl.qa.convert import review_fps

log = logging.getLogger(__name__)

ReviewOrigin = Literal["source", "stored"]
EXTENSIONS = {"mp4": ".mp4", "jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REVIEW_COLUMNS = ["sample_id", "media_type", "media_format", "media", "source", "fps", "num_frames",
                  "width", "height"]
"""The columns `review_media` reads from a row."""


def review_path(root: Path, row: SampleRow, origin: ReviewOrigin, review_height: int | None) -> Path:
    """ROOT/media/<sample_id>.<ext> (stored media) or <sample_id>.source<review_height>.<ext> (from the
    source); refuses ids that could name a file outside that folder."""
    sample_id = str(row["sample_id"])
    if not SAFE_ID.match(sample_id):
        raise ValueError(f"{root}: sample_id {sample_id!r} is not a safe file name; cannot write its media")
    video = row["media_type"] == "video"
    if origin == "source":
        name = f"{sample_id}.source{review_height or ''}{'.mp4' if video else '.jpg'}"
        return root / layout.MEDIA_DIR / name
    fmt = (row.get("media_format") or ("mp4" if video else "jpeg")).lower()
    return root / layout.MEDIA_DIR / f"{sample_id}{EXTENSIONS.get(fmt, '.' + fmt)}"


def shown_size(width: int, height: int, min_height: int | None) -> tuple[int, int]:
    """The (width, height) a video of this size is reviewed at: scaled up to `min_height` when lower
    (Label Studio draws a video at most at its own size, so a 128-pixel clip would be a stamp in the
    panel), width rounded to an even number as H.264 needs; unchanged when tall enough."""
    if not min_height or height >= min_height:
        return width, height
    return max(2, round(width * min_height / height / 2) * 2), min_height


class SourceFiles:
    """The source files of one push: each fetched and checked against the row's sha256 once.

    The last fetched file is held (a video's clips are consecutive rows), and the verdict on every file
    is kept, so a missing or changed source is not fetched again for each of its clips.
    """

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], str | None] = {}
        self._held: tuple[str, Media] | None = None

    def open(self, uri: str, sha256: str | None) -> Media:
        """The source's media; MediaError when it cannot be fetched or is not the file the row was made
        from (no sha256 on the row: not checked)."""
        key = (uri, sha256 or "")
        if key not in self._verdicts:
            self._verdicts[key] = self._check(uri, sha256)
        elif self._verdicts[key] is None and (self._held is None or self._held[0] != uri):
            self._verdicts[key] = self._check(uri, None)  # checked before, no longer held: fetched again
        reason = self._verdicts[key]
        if reason is not None:
            raise MediaError(uri, reason, stage="review")
        assert self._held is not None and self._held[0] == uri
        return self._held[1]

    def _check(self, uri: str, sha256: str | None) -> str | None:
        """Fetch `uri` (held after) and say what is wrong with it; None: it is the row's source."""
        try:
            media = fetch_media(uri)
        except MediaError as err:
            return err.reason
        except Exception as err:  # an fsspec backend's own errors: unknown protocol, network, no package
            return f"cannot fetch: {type(err).__name__}: {err}"
        self._held = (uri, media)
        if sha256 and sha256_of(media) != sha256:
            return "changed since annotation (its sha256 is not the row's)"
        return None


def review_media(root: Path, row: SampleRow, origin: ReviewOrigin, review_height: int | None,
                 sources: SourceFiles) -> tuple[Path, ReviewOrigin] | None:
    """The review file of `row` under ROOT/media (written when missing) and where it came from; None when
    the row has neither a usable source (`origin` source) nor stored media."""
    if origin == "source":
        path = review_path(root, row, "source", review_height)
        if path.is_file():
            return path, "source"
        source: SourceRow = row.get("source") or {}
        uri = source.get("uri") or ""
        try:
            if not uri:
                raise MediaError(uri, "the row names no source file", stage="review")
            atomic_write_bytes(path, from_source(row, sources.open(uri, source.get("sha256")), review_height))
            return path, "source"
        except Exception as err:  # whatever the source or its decoder did: review the stored media instead
            reason = err.reason if isinstance(err, MediaError) else f"{type(err).__name__}: {err}"
            kept = "its stored rendition" if row.get("media") else "nothing (no stored media either)"
            log.warning("sample %s: review media from %s (%sx%s): source %r unusable: %s", row["sample_id"],
                        kept, row.get("width"), row.get("height"), uri, reason)
    path, media = review_path(root, row, "stored", review_height), row.get("media")
    if not path.is_file() and media:
        if row["media_type"] == "video" and review_height:
            media = scaled_up(media, str(row["sample_id"]), review_fps(row), review_height)
        atomic_write_bytes(path, media)
    return (path, "stored") if path.is_file() else None


def from_source(row: SampleRow, media: Media, review_height: int | None) -> bytes:
    """The row's clip (MP4) or image (JPEG) made from its source's `media` at the review size; MediaError
    when the source does not hold the clip (see the module docstring)."""
    source: SourceRow = row.get("source") or {}
    uri = source.get("uri") or ""
    if row["media_type"] == "image":
        return encode_image(resize_frame(load_image(media, uri), review_height), "jpeg")
    fps, num_frames, start_s = row.get("fps"), int(row.get("num_frames") or 0), source.get("clip_start_s")
    if not fps or start_s is None or num_frames < 1:
        raise MediaError(uri, "the row has no clip span (fps, num_frames, source.clip_start_s)",
                         stage="review")
    start = round(start_s * fps)
    end_s = source.get("clip_end_s")
    if end_s is not None and round(end_s * fps) != start + num_frames:
        raise MediaError(uri, f"the row's span [{start_s}, {end_s}) s at {fps} fps is not {num_frames} "
                              "frames", stage="review")
    pictures = (frame.to_ndarray(format="rgb24")
                for _, frame in iter_pyav_frames(media, uri, start, start + num_frames))
    counted = _counted(pictures, num_frames, uri, start)
    return encode_mp4(_resized(counted, review_height, shrink=True), float(fps))


def scaled_up(media: bytes, uri: str, fps: float, min_height: int) -> bytes:
    """A stored clip re-encoded with its height scaled up to `min_height` (`shown_size`); the same bytes
    when it is tall enough."""
    frames = (frame.to_ndarray(format="rgb24") for _, frame in iter_pyav_frames(media, uri))
    first = next(frames, None)
    if first is None or first.shape[0] >= min_height:
        return media
    return encode_mp4(_resized(chain([first], frames), min_height, shrink=False), fps)


def _counted(frames: Iterable[NDArray[Any]], expected: int, uri: str, start: int) -> Iterator[NDArray[Any]]:
    """`frames`, failing when fewer than `expected` came (a shorter clip would shift every track)."""
    count = 0
    for frame in frames:
        count += 1
        yield frame
    if count < expected:
        raise MediaError(uri, f"truncated: the clip from frame {start} has only {count} of {expected} frames",
                         stage="review")


def _resized(frames: Iterable[NDArray[Any]], review_height: int | None, *,
             shrink: bool) -> Iterator[NDArray[Any]]:
    """Frames at the review size of the first: short side at most `review_height` (when `shrink`), then
    scaled up to it when lower (`shown_size`); area averaging to shrink, cubic to enlarge."""
    cv2 = require("cv2", "video")
    size: tuple[int, int] | None = None
    for frame in frames:
        if size is None:
            height, width = frame.shape[:2]
            width, height = scaled_size(width, height, review_height) if shrink else (width, height)
            size = mp4_size(*shown_size(width, height, review_height))
        if (frame.shape[1], frame.shape[0]) == size:
            yield frame
        else:
            smaller = size[0] <= frame.shape[1] and size[1] <= frame.shape[0]
            yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)
