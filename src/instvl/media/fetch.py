"""Get a media file's bytes (or its local path) and say what is wrong with it in one error type.

Media are passed around as `Media`: a local path (str) or the file's bytes (for fsspec URLs), fetched
once per file and handed to every later step. Every problem with a file, from listing to decoding,
becomes a `MediaError(uri, reason, stage)` whose reason says what is wrong ("zero-length file",
"not a video: ...", "truncated: ..."), never a decoder traceback.
"""

import hashlib
import io
import os

Media = str | bytes
"""A local file path, or the encoded bytes of a file that does not live on local disk."""


class MediaError(Exception):
    """A media file that cannot be used; `reason` is short and human readable, `stage` says where."""

    def __init__(self, uri: str, reason: str, stage: str = "probe"):
        super().__init__(f"{uri}: {reason}")
        self.uri, self.reason, self.stage = uri, reason, stage


def fetch_media(uri: str) -> Media:
    """A local path for local files (`file://` stripped), else the bytes fetched through fsspec."""
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        if not os.path.isfile(path):
            raise MediaError(uri, "missing file: no such file or directory", stage="list")
        return path
    import fsspec

    try:
        with fsspec.open(uri, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise MediaError(uri, "missing file: no such file or directory", stage="list") from err


def media_size(media: Media) -> int:
    return os.path.getsize(media) if isinstance(media, str) else len(media)


def read_head(media: Media, num_bytes: int = 64) -> bytes:
    if isinstance(media, bytes):
        return media[:num_bytes]
    with open(media, "rb") as f:
        return f.read(num_bytes)


def read_bytes(media: Media) -> bytes:
    """The whole file's bytes."""
    if isinstance(media, bytes):
        return media
    with open(media, "rb") as f:
        return f.read()


def sha256_of(media: Media) -> str:
    """Hex sha256 of the file's bytes (streamed for paths)."""
    if isinstance(media, bytes):
        return hashlib.sha256(media).hexdigest()
    digest = hashlib.sha256()
    with open(media, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_file(media: Media) -> str | io.BytesIO:
    """What PyAV and Pillow open: the path, or a fresh BytesIO over the bytes."""
    return media if isinstance(media, str) else io.BytesIO(media)
