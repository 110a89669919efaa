"""Annotation lists: media (a path or a URL) with one or more captions, as the global-only training data
and the zero-shot retrieval benchmarks (MSR-VTT, DiDeMo, MSVD, ...) are distributed.

    entries = read_annotations("msrvtt_test.json", media_root="/data/msrvtt/videos")

Formats, chosen by the file's extension:
- `.json`: a list of objects, e.g. UMT/VINDLU's `{"video": "a.mp4", "caption": "..."}` or
  `{"image": "b.jpg", "caption": ["...", "..."]}`;
- `.jsonl`: one such object per line;
- `.csv` / `.tsv`: a header row, then one entry per line.
The media key is one of `video`, `image`, `media`, `path`, `filepath`, `video_path`, `image_path`
(`image` and `video` also give the media type; otherwise the file extension does); the caption key
one of `caption`, `captions`, `text`, `sentence` (a string or, in JSON, a list of strings). Lines that
name the same media are merged into one entry with several captions, in order (MSR-VTT lists one
caption per line). Relative paths are resolved against `media_root` (default: the list's folder).
Every problem is an `AnnotationError` naming the file and line.

Zero-shot retrieval over several captions per video (`multi_caption_retrieval`; run by `instvl eval
--set eval.annotations=...`): text-to-video counts a hit when the caption's own video ranks high
enough; video-to-text when any of the video's captions does.
"""

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instvl.media.probe import IMAGE_FORMATS

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)
MEDIA_KEYS = ("video", "image", "media", "path", "filepath", "video_path", "image_path")
CAPTION_KEYS = ("caption", "captions", "text", "sentence")
IMAGE_EXTENSIONS = {f".{name}" for name in IMAGE_FORMATS} | {".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
FORMATS = (".json", ".jsonl", ".csv", ".tsv")


class AnnotationError(ValueError):
    """A malformed annotation list; the message names the file and the line."""


@dataclass
class Entry:
    """One media file of an annotation list and its captions."""

    media: str
    """As written in the list (the sample id)."""
    uri: str
    """Resolved: an absolute path or a URL."""
    media_type: str
    captions: list[str] = field(default_factory=list)
    line: int = 0
    """Line of the list where the media first appears."""

    def to_row(self, source: str) -> dict[str, Any]:
        """The entry as a training row (the keys `instvl.train.transforms.prepare_sample` reads)."""
        return {"sample_id": self.media, "media_type": self.media_type, "source": {"uri": self.uri},
                "num_frames": None, "global_caption": self.captions[0], "captions": list(self.captions),
                "instances": [], "qc": None, "split": None, "_shard": f"{source}:{self.line}"}


def read_annotations(path: str | Path, media_root: str | Path | None = None) -> list[Entry]:
    """The entries of an annotation list (see the module docstring); raises AnnotationError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise AnnotationError(f"{path}: not an annotation list (expected one of {', '.join(FORMATS)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from err
    records = {".json": _json_records, ".jsonl": _jsonl_records}.get(suffix, _csv_records)(path, text)
    root = Path(media_root) if media_root is not None else path.parent
    entries: dict[str, Entry] = {}
    for line, record in records:
        media, media_type, captions = _parse_record(path, line, record)
        entry = entries.get(media)
        if entry is None:
            entry = entries[media] = Entry(media, _resolve(media, root), media_type, [], line)
        entry.captions += captions
    if not entries:
        raise AnnotationError(f"{path}: no entries")
    return list(entries.values())


def _where(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _json_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, object) of a JSON list, with the line each object starts on."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise AnnotationError(f"{_where(path, _line_of(text, pos))}: a JSON annotation list must be a list "
                              "of objects")
    pos = _skip_space(text, pos + 1)
    while not text.startswith("]", pos):
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{_where(path, err.lineno)}: invalid JSON: {err.msg}") from err
        yield _line_of(text, pos), record
        pos = _skip_space(text, end)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif not text.startswith("]", pos):
            raise AnnotationError(f"{_where(path, _line_of(text, pos))}: invalid JSON: expected ',' or ']'")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        raise AnnotationError(f"unexpected end of the JSON list at line {_line_of(text, pos)}")
    return pos


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield line, json.loads(raw)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{_where(path, line)}: invalid JSON: {err.msg}") from err


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    if not reader.fieldnames:
        raise AnnotationError(f"{_where(path, 1)}: no header row")
    for record in reader:
        if None in record:
            raise AnnotationError(f"{_where(path, reader.line_num)}: more fields than the header names")
        yield reader.line_num, record


def _parse_record(path: Path, line: int, record: Any) -> tuple[str, str, list[str]]:
    """(media, media type, captions) of one record."""
    where = _where(path, line)
    if not isinstance(record, dict):
        raise AnnotationError(f"{where}: expected an object with a media and a caption field, got "
                              f"{type(record).__name__}")
    media_key = next((k for k in MEDIA_KEYS if record.get(k)), None)
    if media_key is None:
        raise AnnotationError(f"{where}: no media field (one of {', '.join(MEDIA_KEYS)})")
    media = record[media_key]
    if not isinstance(media, str):
        raise AnnotationError(f"{where}: the media field {media_key!r} must be a string")
    caption_key = next((k for k in CAPTION_KEYS if k in record), None)
    if caption_key is None:
        raise AnnotationError(f"{where}: no caption field (one of {', '.join(CAPTION_KEYS)})")
    value = record[caption_key]
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip()
                                                                  for c in captions):
        raise AnnotationError(f"{where}: the caption field {caption_key!r} must be a non-empty string or a "
                              "list of them")
    if media_key in ("image", "image_path"):
        media_type = "image"
    elif media_key in ("video", "video_path"):
        media_type = "video"
    else:
        media_type = "image" if Path(media.split("?")[0]).suffix.lower() in IMAGE_EXTENSIONS else "video"
    return media, media_type, [c.strip() for c in captions]


def _resolve(media: str, root: Path) -> str:
    if "://" in media:
        return media
    path = Path(media)
    return str(path if path.is_absolute() else root / path)


def caption_targets(entries: list[Entry]) -> tuple[list[str], list[int]]:
    """Every caption of the entries, and for each the index of its entry (the text-to-video ground truth)."""
    texts, owners = [], []
    for index, entry in enumerate(entries):
        texts += entry.captions
        owners += [index] * len(entry.captions)
    return texts, owners


def multi_caption_retrieval(text: "torch.Tensor", video: "torch.Tensor", owners: list[int],
                            rerank: Any = "none", temperature: float = 0.01) -> dict[str, Any]:
    """Retrieval where caption i belongs to video owners[i] and a video may own several captions."""
    from instvl.train.retrieval import Similarity, retrieval_metrics

    report = retrieval_metrics(Similarity.from_embeddings(text, video), [[o] for o in owners], rerank,
                               temperature)
    return report.to_dict()
