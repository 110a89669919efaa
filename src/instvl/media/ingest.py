"""Ingest: list raw media, probe each file, cut videos into shots and clips, give every clip a stable id.

    specs, failures = ingest(["videos/", "s3://bucket/photos/*.jpg"], IngestConfig())

Inputs are local folders (walked recursively), globs, single files or fsspec URLs. A file that cannot
be used never stops the run: it comes back as a `Failure(uri, stage, reason)`. A clip's `sample_id`
hashes the file's sha256 with the clip's frame span, so it is the same on every run and on every
machine, whatever the file is called.
"""

import glob
import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from instvl.config import BaseConfig
from instvl.media.fetch import Media, MediaError, fetch_media, media_size, sha256_of
from instvl.media.probe import MediaInfo, probe
from instvl.media.shots import ShotConfig, detect_shots

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class IngestConfig(BaseConfig):
    """Which files are media, how videos become clips, and how clips are decoded for annotation."""

    video_extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    shots: ShotConfig = Field(default_factory=ShotConfig)
    min_clip_s: float = Field(1.0, ge=0)
    """Shots shorter than this are dropped."""
    max_clip_s: float | None = Field(20.0, gt=0)
    """Longer shots are split into equal windows no longer than this; null keeps whole shots."""
    dedupe: bool = True
    """Files with identical bytes are ingested once (the first in listing order)."""
    num_frames: int | None = Field(16, ge=1)
    """Frames sampled per clip for annotation (evenly spread); null samples every `stride`-th frame."""
    sample_fps: float | None = Field(None, gt=0)
    """Sample at about this rate (a frame stride); `num_frames` then caps the count."""
    max_short_side: int | None = Field(480, ge=16)
    """The frames the annotation models see (detector, tracker, captioner) are downscaled so their short
    side is at most this."""
    store_short_side: int | None = Field(320, ge=16)
    """Video clips a row embeds are stored with their short side at most this: the training rendition,
    independent of `max_short_side` (null: the annotation frames' size). 320 is 1.43x a 224 crop; a
    720p source stored at 320p costs the trainer a quarter of its 720p decode (`docs/BENCHMARKS.md`,
    loader section). The row's width, height and masks describe the stored media."""
    store_image_short_side: int | None = Field(448, ge=16)
    """Images a row embeds are stored (re-encoded once as JPEG unless they fit) with their short side at
    most this (null: the annotation frames' size). 448 = 2 x 224: the trainer decodes such a JPEG
    straight at half size (`decode_quality: fast`), faster than a smaller one decoded whole."""
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    """auto: decord in a worker process, PyAV when decord fails or is not installed."""
    worker_timeout_s: float = Field(60.0, gt=0)
    """A decode worker that takes longer is killed and the clip fails with 'decoder timed out'."""

    def store_side(self, media_type: str) -> int | None:
        """The short side a row's embedded media of this type are stored at (at most; never enlarged)."""
        side = self.store_image_short_side if media_type == "image" else self.store_short_side
        return side or self.max_short_side

    @model_validator(mode="after")
    def _check_lengths(self) -> "IngestConfig":
        if self.max_clip_s is not None and self.max_clip_s < self.min_clip_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) must be >= min_clip_s ({self.min_clip_s})")
        return self


@dataclass(frozen=True, slots=True)
class Failure:
    """A file (or clip) that was skipped: where, at which stage, and why."""

    uri: str
    stage: str
    reason: str

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason} (at {self.stage})"


@dataclass(frozen=True, slots=True)
class MediaSource:
    """One probed input file."""

    uri: str
    media_type: str
    sha256: str
    size_bytes: int
    info: MediaInfo


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """One future InstVL row: an image, or the span [start_frame, end_frame) of a video."""

    sample_id: str
    uri: str
    media_type: str
    sha256: str
    width: int
    height: int
    start_frame: int = 0
    end_frame: int = 1
    fps: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    shot_index: int = 0
    codec: str | None = None

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    def sample_fields(self) -> dict[str, Any]:
        """Keyword arguments for `records.Sample` describing this clip's source."""
        return {"sample_id": self.sample_id, "media_type": self.media_type, "uri": self.uri,
                "sha256": self.sha256, "clip_start_s": self.start_s, "clip_end_s": self.end_s,
                "width": self.width, "height": self.height, "fps": self.fps, "num_frames": self.num_frames}


def make_sample_id(content_sha256: str, start_frame: int, end_frame: int) -> str:
    """Stable id of a span of a file's content: same bytes and span give the same id everywhere."""
    return hashlib.sha256(f"{content_sha256}:{start_frame}:{end_frame}".encode()).hexdigest()[:24]


def media_type_of(uri: str, cfg: IngestConfig) -> str | None:
    suffix = os.path.splitext(uri)[1].lower()
    if suffix in cfg.video_extensions:
        return "video"
    return "image" if suffix in cfg.image_extensions else None


def list_sources(inputs: str | Path | Iterable[str | Path],
                 cfg: IngestConfig) -> tuple[list[str], list[Failure]]:
    """Media files under the inputs, sorted and de-duplicated; inputs that match nothing are failures."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    found, failures = set(), []
    for item in map(str, items):
        remote = "://" in item and not item.startswith("file://")
        uris, problem = (_list_fsspec if remote else _list_local)(item.removeprefix("file://"), cfg)
        if problem:
            failures.append(Failure(item, "list", problem))
        found.update(uris)
    return sorted(found), failures


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _list_local(path: str, cfg: IngestConfig) -> tuple[list[str], str | None]:
    if os.path.isdir(path):
        files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names if not f.startswith(".")]
        kept = [os.path.abspath(f) for f in files if media_type_of(f, cfg)]
        return kept, None if kept else "no media files found in directory"
    if _has_magic(path):
        kept = [os.path.abspath(f) for f in glob.glob(path, recursive=True) if os.path.isfile(f)
                and media_type_of(f, cfg)]
        return kept, None if kept else "no media files matched the pattern"
    if not os.path.isfile(path):
        return [], "missing file: no such file or directory"
    if media_type_of(path, cfg) is None:
        return [], f"unsupported file type {os.path.splitext(path)[1] or '(no extension)'!r}"
    return [os.path.abspath(path)], None


def _list_fsspec(url: str, cfg: IngestConfig) -> tuple[list[str], str | None]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if _has_magic(path):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = fs.find(path)
    elif fs.isfile(path):
        paths = [path]
    else:
        return [], "missing file: no such file or directory"
    kept = [fs.unstrip_protocol(p) for p in paths
            if media_type_of(p, cfg) and not os.path.basename(p).startswith(".")]
    return kept, None if kept else "no media files found"


def probe_source(uri: str, cfg: IngestConfig, media: Media | None = None) -> MediaSource:
    """Hash and probe one file (fetched unless given); raises MediaError with a clear reason."""
    media_type = media_type_of(uri, cfg)
    if media_type is None:
        raise MediaError(uri, f"unsupported file type {os.path.splitext(uri)[1]!r}", stage="list")
    media = fetch_media(uri) if media is None else media
    info = probe(media, uri, media_type)
    return MediaSource(uri, media_type, sha256_of(media), media_size(media), info)


def plan_windows(start: int, end: int, fps: float, cfg: IngestConfig) -> list[tuple[int, int]]:
    """Split one shot into equal windows no longer than max_clip_s; [] when shorter than min_clip_s."""
    length = end - start
    if length <= 0 or length < math.ceil(cfg.min_clip_s * fps - 1e-6):
        return []
    max_frames = length if cfg.max_clip_s is None else max(1, math.floor(cfg.max_clip_s * fps + 1e-6))
    pieces = math.ceil(length / max_frames)
    bounds = [start + round(i * length / pieces) for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def plan_clips(source: MediaSource, cfg: IngestConfig, media: Media | None = None) -> list[ClipSpec]:
    """ClipSpecs of one probed source: one for an image, one per shot window for a video."""
    info = source.info
    whole = ClipSpec(sample_id=make_sample_id(source.sha256, 0, 1), uri=source.uri,
                     media_type=source.media_type, sha256=source.sha256, width=info.width, height=info.height,
                     codec=info.codec)
    if source.media_type == "image":
        return [whole]
    if not info.fps:
        raise MediaError(source.uri, "not a video: no frame rate", stage="clips")
    fps = float(info.fps)
    shots = [(0, info.num_frames)]
    if cfg.shots.enabled:
        media = fetch_media(source.uri) if media is None else media
        shots = detect_shots(media, source.uri, fps, cfg.shots)
    specs = []
    for shot_index, (shot_start, shot_end) in enumerate(shots):
        for start, end in plan_windows(shot_start, shot_end, fps, cfg):
            specs.append(replace(whole, sample_id=make_sample_id(source.sha256, start, end),
                                 start_frame=start, end_frame=end, fps=fps, start_s=start / fps,
                                 end_s=end / fps, shot_index=shot_index))
    if not specs:
        longest = max(b - a for a, b in shots) / fps
        raise MediaError(source.uri, f"too short: longest shot is {longest:.2f} s, min_clip_s is "
                         f"{cfg.min_clip_s:g} s", stage="clips")
    return specs


def ingest(inputs: str | Path | Sequence[str | Path], cfg: IngestConfig | None = None
           ) -> tuple[list[ClipSpec], list[Failure]]:
    """All clips of all inputs in a deterministic order, and every file that was skipped with why."""
    cfg = cfg or IngestConfig()
    uris, failures = list_sources(inputs, cfg)
    specs: list[ClipSpec] = []
    first_by_hash: dict[str, str] = {}
    for uri in uris:
        try:
            media = fetch_media(uri)
            source = probe_source(uri, cfg, media)
            if cfg.dedupe and source.sha256 in first_by_hash:
                first = first_by_hash[source.sha256]
                raise MediaError(uri, f"duplicate: same bytes as {first}", stage="dedupe")
            first_by_hash[source.sha256] = uri
            specs.extend(plan_clips(source, cfg, media))
        except MediaError as err:
            log.warning("skipping %s: %s", err.uri, err.reason)
            failures.append(Failure(err.uri, err.stage, err.reason))
        except OSError as err:  # permissions, vanished files, network storage errors
            log.warning("skipping %s: unreadable: %s", uri, err)
            failures.append(Failure(uri, "probe", f"unreadable: {err}"))
    log.info("ingested %d clips from %d files (%d skipped)", len(specs), len(uris), len(failures))
    return specs, failures
