"""The shard schema: Sample -> row -> Parquet -> row -> Sample is lossless, only portable types are used, and
the row TypedDicts match it."""

import types
import typing
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instvl.datasets.records import FrameSpace, Instance, QCRecord, Sample, Trajectory
from instvl.datasets.schema import (
    METADATA_CONFIG_KEY,
    METADATA_VERSION_KEY,
    QUARANTINE_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    SampleRow,
    major,
    reason_code,
    schema_with_metadata,
)

# float32 columns: every value here is exactly representable so equality after the round trip is exact
TRAJ = Trajectory(frame_index=[0, 2, 5],
                  box=[[0.0, 0.25, 0.5, 0.75], [0.125, 0.25, 0.625, 0.75], [0.5, 0.5, 1.0, 1.0]],
                  score=[0.5, 0.75, 1.0], mask_rle=["abc", "", "PPY2"])


def _video() -> Sample:
    return Sample(
        sample_id="vid-1", media_type="video", width=320, height=240, num_frames=6,
        global_caption="two dogs play",
        instances=[Instance(0, "dog", "a brown dog runs", TRAJ, score=0.75),
                   Instance(7, "ball", "a ball", Trajectory([1], [[0.25, 0.25, 0.5, 0.5]]), score=0.5)],
        fps=29.5, media=b"\x00\x01binary\xff", media_format="mp4", uri="s3://bucket/v.mp4", sha256="ab" * 32,
        clip_start_s=1.5, clip_end_s=3.25,
        qc=QCRecord("corrected", "ann", datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC), 42, ["low score"]),
        models={"detector": "hf:grounding-dino-tiny", "tracker": "fake"}, config_hash="f00d",
        created_at=datetime(2026, 1, 1, tzinfo=UTC), split="val")


def _image_without_media() -> Sample:
    return Sample(sample_id="img-1", media_type="image", width=64, height=48, num_frames=1,
                  global_caption="an empty room", instances=[], created_at=datetime(2026, 1, 2, tzinfo=UTC),
                  uri="/data/room.jpg", split="test")


@pytest.mark.parametrize("sample", [_video(), _image_without_media()], ids=["video", "image-no-media"])
def test_round_trip_through_parquet(sample, tmp_path):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pylist([sample.to_row()], schema=schema_with_metadata("{}")), path)
    (row,) = pq.read_table(path).to_pylist()
    back = Sample.from_row(row)
    assert back == sample
    assert back.qc.reviewed_at == sample.qc.reviewed_at and back.created_at.utcoffset().total_seconds() == 0


def test_empty_instances_and_null_media_stay_so(tmp_path):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pylist([_image_without_media().to_row()], schema=SCHEMA), path)
    (row,) = pq.read_table(path).to_pylist()
    assert row["instances"] == [] and row["media"] is None and row["fps"] is None
    assert row["source"]["clip_start_s"] is None


def _types(data_type: pa.DataType):
    yield data_type
    if isinstance(data_type, pa.StructType):
        for i in range(data_type.num_fields):
            yield from _types(data_type.field(i).type)
    elif isinstance(data_type, pa.ListType | pa.FixedSizeListType | pa.LargeListType):
        yield from _types(data_type.value_type)


@pytest.mark.parametrize("schema", [SCHEMA, QUARANTINE_SCHEMA], ids=["shard", "quarantine"])
def test_only_portable_types(schema):
    every = [t for f in schema for t in _types(f.type)]
    assert not any(isinstance(t, pa.MapType) for t in every)  # Hugging Face datasets cannot read map
    assert not any(pa.types.is_timestamp(t) and t.tz != "UTC" for t in every)


def test_box_is_fixed_size_float32():
    box = SCHEMA.field("instances").type.value_type.field("trajectory").type.field("box").type.value_type
    assert box == pa.list_(pa.float32(), 4)


def test_version_metadata():
    schema = schema_with_metadata('{"a": 1}')
    assert schema.metadata[METADATA_VERSION_KEY] == SCHEMA_VERSION.encode()
    assert schema.metadata[METADATA_CONFIG_KEY] == b'{"a": 1}'
    assert major(SCHEMA_VERSION) >= 1 and major("12.3") == 12
    assert not SCHEMA.field("sample_id").nullable


def test_wrong_type_is_rejected():
    row = _video().to_row()
    row["instances"][0]["trajectory"]["box"][0] = [0.1, 0.2, 0.3]  # three numbers, not four
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        pa.Table.from_pylist([row], schema=SCHEMA)


PYTHON_TYPES = {pa.string(): str, pa.binary(): bytes, pa.int32(): int, pa.int64(): int, pa.float32(): float,
                pa.float64(): float}


def _without_none(hint):
    """`X | None` -> X; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner
    return hint


def _check_hint(hint, data_type: pa.DataType, where: str) -> None:
    hint = _without_none(hint)
    if isinstance(data_type, pa.StructType):
        assert typing.is_typeddict(hint), f"{where}: a struct needs a TypedDict, got {hint}"
        _check_row_type(hint, data_type, where)
    elif isinstance(data_type, pa.ListType | pa.FixedSizeListType):
        assert typing.get_origin(hint) is list, f"{where}: a list column needs list[...], got {hint}"
        _check_hint(typing.get_args(hint)[0], data_type.value_type, f"{where}[]")
    elif pa.types.is_timestamp(data_type):
        assert hint is datetime, f"{where}: timestamp is a datetime, got {hint}"
    else:
        expected = PYTHON_TYPES[data_type]
        assert hint is expected, f"{where}: {data_type} is {expected.__name__}, got {hint}"


def _check_row_type(row_type, struct: pa.StructType | pa.Schema, where: str) -> None:
    hints = typing.get_type_hints(row_type)
    fields = {f.name: f.type for f in struct}
    assert list(hints) == list(fields), f"{where}: {row_type.__name__} {list(hints)} != SCHEMA {list(fields)}"
    for name, data_type in fields.items():
        _check_hint(hints[name], data_type, f"{where}.{name}")


def test_row_typeddicts_match_the_schema_field_for_field():
    """SampleRow and the TypedDicts it nests have SCHEMA's fields, in order, with matching Python types."""
    _check_row_type(SampleRow, SCHEMA, "SampleRow")


def test_row_typeddict_check_catches_a_field_added_to_one_side():
    extra = pa.schema([*SCHEMA, pa.field("new_column", pa.string())])
    with pytest.raises(AssertionError, match="new_column"):
        _check_row_type(SampleRow, extra, "SampleRow")
    renamed = pa.schema([f.with_name("frames") if f.name == "num_frames" else f for f in SCHEMA])
    with pytest.raises(AssertionError, match="frames"):
        _check_row_type(SampleRow, renamed, "SampleRow")


def test_only_clip_frame_trajectories_become_rows():
    sampled = Trajectory([0, 1, 2], [[0.0, 0.0, 0.5, 0.5]] * 3, space=FrameSpace.SAMPLED)
    with pytest.raises(ValueError, match="clip_frame"):
        sampled.to_row()
    mapped = sampled.to_clip_frames([4, 8, 12, 16])  # sampled index k -> clip frame 4 (k + 1)
    assert mapped.space == FrameSpace.CLIP and mapped.to_row()["frame_index"] == [4, 8, 12]
    with pytest.raises(ValueError, match="sampled_index"):
        mapped.to_clip_frames([0, 1, 2])  # mapping twice is an error, not a silent re-map
    with pytest.raises(IndexError):
        sampled.to_clip_frames([0, 1])
    assert Trajectory.from_row(mapped.to_row()) == mapped


def test_reason_code_is_the_part_before_the_colon():
    assert reason_code("truncated: 'moov' box missing") == "truncated"
    assert reason_code("short_track: instance 2 has 1 box") == "short_track"
    assert reason_code(None) == "unknown"
