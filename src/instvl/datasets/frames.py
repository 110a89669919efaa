"""Decode a few chosen frames of a sample's media (embedded bytes or a local file) as RGB arrays.

Used for thumbnails and media checks, where only a handful of frames of short clips are needed: PyAV
decodes sequentially and stops after the last wanted frame (PyAV, not decord: decord can crash the
process on corrupt bytes, and these bytes come from shards we are checking).
"""

import io
import os
from collections.abc import Iterable
from typing import Any

import numpy as np


class FrameError(ValueError):
    """The media could not be decoded; the message says why."""


def media_of(row: dict[str, Any]) -> bytes | str | None:
    """The row's embedded media bytes, else its source uri when that is a local file, else None."""
    if row.get("media"):
        return row["media"]
    uri = (row.get("source") or {}).get("uri") or ""
    path = uri.removeprefix("file://")
    return path if path and "://" not in path and os.path.isfile(path) else None


def decode_frames(media: bytes | str, media_type: str, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """Frames (H, W, 3) uint8 RGB at `indices` (those that exist); raises FrameError when none decode."""
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if not wanted:
        return {}
    frames = _decode_image(media) if media_type == "image" else _decode_video(media, wanted)
    found = {i: frames[i] for i in wanted if i in frames}
    if not found:
        raise FrameError(f"none of the frames {wanted[:5]} could be decoded")
    return found


def _decode_image(media: bytes | str) -> dict[int, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(media) if isinstance(media, bytes) else media) as img:
            return {0: np.asarray(img.convert("RGB"))}
    except (UnidentifiedImageError, OSError) as err:
        raise FrameError(f"not a readable image ({err})") from err


def _decode_video(media: bytes | str, wanted: list[int]) -> dict[int, np.ndarray]:
    import av

    frames: dict[int, np.ndarray] = {}
    last = wanted[-1]
    targets = set(wanted)
    try:
        with av.open(io.BytesIO(media) if isinstance(media, bytes) else media) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in targets:
                    frames[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
    except (av.FFmpegError, OSError, ValueError, IndexError) as err:
        if not frames:
            raise FrameError(f"not a decodable video ({err})") from err
    return frames


def evenly_spaced(indices: list[int], count: int) -> list[int]:
    """Up to `count` entries of `indices` spread evenly from the first to the last."""
    if len(indices) <= count:
        return list(indices)
    positions = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[p] for p in dict.fromkeys(positions.tolist())]
