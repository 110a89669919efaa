"""The InstVL shard schema (one row per image or video clip) and its version.

Only types that pyarrow, pandas, DuckDB, polars and Hugging Face `datasets` all read are used:
no Parquet `map` (key/value pairs are `list<struct<key, value>>`), boxes are `fixed_size_list<float32, 4>`.

The `*Row` TypedDicts beside SCHEMA type the row dicts that `to_pylist()` gives readers (a test keeps their
fields equal to SCHEMA's). They are not total: a reader that selects columns gets only those keys, and
`row.get("qc") or {}` stays well typed. `records.Sample` is the typed record for code outside the hot path.
"""

from datetime import datetime
from typing import TypedDict

import pyarrow as pa

SCHEMA_VERSION = "1.1"
"""Bumped on any change of the schema below; readers refuse a major version they do not know.

1.1: `media` may be smaller than the frames the annotation models saw (`media.clips.stored_size`), and
`mask_rle` is always at the row's height x width. In 1.0 rows the two sizes were the same, except that
a clip with an odd annotation-frame side has masks one pixel wider or taller than the row
(`records.decode_rle` says so instead of returning a wrong mask)."""

METADATA_VERSION_KEY = b"instvl.schema_version"
METADATA_CONFIG_KEY = b"instvl.config"

MEDIA_TYPES = ("image", "video")
QC_STATUSES = ("auto", "accepted", "corrected", "rejected")
SPLITS = ("train", "val", "test")

BOX = pa.list_(pa.float32(), 4)
KEY_VALUE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

SOURCE = pa.struct([
    ("uri", pa.string()),          # where the media came from (path, URL)
    ("sha256", pa.string()),       # of the original file's bytes
    ("clip_start_s", pa.float64()),  # clip span inside the source video; null for images
    ("clip_end_s", pa.float64()),
])

TRAJECTORY = pa.struct([
    ("frame_index", pa.list_(pa.int32())),   # clip frames (records.FrameSpace.CLIP), strictly increasing
    ("box", pa.list_(BOX)),                  # xyxy normalised to [0, 1], one per frame_index
    ("mask_rle", pa.list_(pa.string())),     # COCO RLE counts at the row's (height, width); empty: none
    ("score", pa.list_(pa.float32())),       # per-frame tracker/detector confidence
])

INSTANCE = pa.struct([
    ("instance_id", pa.int32()),   # unique within the sample
    ("phrase", pa.string()),       # the detector's category / noun phrase
    ("caption", pa.string()),      # free-form description of this instance
    ("score", pa.float32()),       # overall confidence
    ("trajectory", TRAJECTORY),
])

QC = pa.struct([
    ("status", pa.string()),                    # auto | accepted | corrected | rejected
    ("reviewer", pa.string()),
    ("reviewed_at", UTC_TIMESTAMP),
    ("task_id", pa.int64()),                    # Label Studio task id
    ("route_reasons", pa.list_(pa.string())),   # why the sample was (or was not) sent to review
])

PROVENANCE = pa.struct([
    ("instvl_version", pa.string()),
    ("config_hash", pa.string()),
    ("models", KEY_VALUE),   # role -> backend:model, e.g. detector -> hf:IDEA-Research/grounding-dino-tiny
    ("created_at", UTC_TIMESTAMP),
])

SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("media_type", pa.string(), nullable=False),
    pa.field("source", SOURCE),
    # width x height: the pixels `media` decodes to (the stored rendition, `media.clips.stored_size`), or
    # of the source file when `media` is null; boxes are normalised, so they hold at any size.
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("fps", pa.float32()),           # null for images
    pa.field("num_frames", pa.int32()),      # 1 for images
    pa.field("media_format", pa.string()),   # container of `media`: mp4, jpeg, png
    pa.field("media", pa.binary()),          # encoded bytes, or null when only source.uri is kept
    pa.field("global_caption", pa.string()),
    pa.field("instances", pa.list_(INSTANCE)),
    pa.field("qc", QC),
    pa.field("provenance", PROVENANCE),
    pa.field("split", pa.string()),
])


# The row dicts of SCHEMA, struct by struct: same fields, order and types (tests/datasets/test_schema.py).

class SourceRow(TypedDict, total=False):
    uri: str | None
    sha256: str | None
    clip_start_s: float | None
    clip_end_s: float | None


class TrajectoryRow(TypedDict, total=False):
    frame_index: list[int]   # clip frames (records.FrameSpace.CLIP)
    box: list[list[float]]
    mask_rle: list[str]
    score: list[float]


class InstanceRow(TypedDict, total=False):
    instance_id: int
    phrase: str
    caption: str
    score: float
    trajectory: TrajectoryRow


class QCRow(TypedDict, total=False):
    status: str
    reviewer: str | None
    reviewed_at: datetime | None
    task_id: int | None
    route_reasons: list[str]


class KeyValueRow(TypedDict, total=False):
    key: str
    value: str


class ProvenanceRow(TypedDict, total=False):
    instvl_version: str
    config_hash: str | None
    models: list[KeyValueRow]
    created_at: datetime


class SampleRow(TypedDict, total=False):
    """One SCHEMA row, as `pyarrow.Table.to_pylist()` gives it."""

    sample_id: str
    media_type: str
    source: SourceRow
    width: int
    height: int
    fps: float | None
    num_frames: int
    media_format: str | None
    media: bytes | None
    global_caption: str
    instances: list[InstanceRow]
    qc: QCRow
    provenance: ProvenanceRow
    split: str


def schema_with_metadata(config_json: str | None = None) -> pa.Schema:
    """SCHEMA with the version (and optionally the resolved config as JSON) in its file metadata."""
    metadata = {METADATA_VERSION_KEY: SCHEMA_VERSION.encode()}
    if config_json is not None:
        metadata[METADATA_CONFIG_KEY] = config_json.encode()
    return SCHEMA.with_metadata(metadata)


def major(version: str) -> int:
    """The major part of a schema version string such as '1.0'."""
    return int(version.split(".", 1)[0])


QUARANTINE_SCHEMA = pa.schema([
    pa.field("uri", pa.string(), nullable=False),   # the input that failed
    pa.field("sample_id", pa.string()),             # when known
    pa.field("stage", pa.string()),                 # ingest | decode | detect | track | caption | write
    pa.field("reason", pa.string(), nullable=False),
    pa.field("created_at", UTC_TIMESTAMP),
])
"""Inputs that could not become samples, with the reason; written beside the shards of each unit."""


def reason_code(reason: str | None) -> str:
    """The stable code of a stored reason, the part before its colon: quarantine `reason`s and
    `qc.route_reasons` are 'code: details' ('short_track: instance 2 has 1 box' -> 'short_track')."""
    return (reason or "unknown").split(":", 1)[0].strip()
