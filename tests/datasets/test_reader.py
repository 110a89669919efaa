"""ShardReader: pieces cover every row once, columns are projected, batches are bounded.

How training deals the pieces to ranks and workers is tested in tests/train/test_data.py.
"""

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instvl.datasets.reader import SchemaVersionError, ShardReader, read_table
from instvl.datasets.records import Sample


@pytest.fixture
def root(make_dataset):
    return make_dataset(units=3, per_unit=7, row_group_rows=3)  # 3 shards x 3 row groups (3, 3, 1 rows)


def test_pieces_cover_every_row_once(root):
    reader = ShardReader(root, ["sample_id"])
    pieces = reader.pieces()
    assert [rows for _path, _group, rows in pieces] == [3, 3, 1] * 3 and reader.num_rows() == 21
    seen = Counter(row["sample_id"] for piece in pieces for row in reader.iter_rows([piece]))
    assert seen == Counter({f"s-{i:05d}": 1 for i in range(21)})


def test_column_projection(root):
    batch = next(ShardReader(root, ["sample_id", "instances"]).iter_batches())
    assert batch.schema.names == ["sample_id", "instances"]
    table = read_table(root, columns=["split"])
    assert table.num_rows == 21 and table.column_names == ["split"]


def test_batches_never_exceed_batch_rows(root):
    sizes = [b.num_rows for b in ShardReader(root, ["sample_id"], batch_rows=2).iter_batches()]
    assert max(sizes) == 2 and sum(sizes) == 21
    # a batch never spans two row groups, so it streams one row group at a time
    assert sizes == [2, 1, 2, 1, 1] * 3


def test_rows_rebuild_samples(root):
    row = next(iter(ShardReader(root)))
    sample = Sample.from_row(row)
    assert sample.sample_id == "s-00000" and len(sample.instances) == 2
    assert sample.instances[1].trajectory.boxes_array().shape == (8, 4)


def test_needs_a_root_or_shards():
    with pytest.raises(ValueError, match="root or a list"):
        ShardReader()


def test_refuses_unknown_major_version(root, tmp_path):
    source = ShardReader(root).paths[0]
    table = pq.read_table(source).replace_schema_metadata({b"instvl.schema_version": b"9.0"})
    other = tmp_path / "future.parquet"
    pq.write_table(table, other)
    with pytest.raises(SchemaVersionError, match="future.parquet: schema version 9.0"):
        list(ShardReader(shards=[other]).iter_batches())
    pq.write_table(table.replace_schema_metadata(None), other)
    with pytest.raises(SchemaVersionError, match="no instvl.schema_version"):
        list(ShardReader(shards=[other]).iter_batches())


def test_empty_dataset_gives_empty_table(tmp_path):
    (tmp_path / "shards").mkdir()
    table = read_table(tmp_path, columns=["sample_id"])
    assert table.num_rows == 0 and table.schema.field("sample_id").type == pa.string()


def test_reads_a_1_0_shard(root, tmp_path):
    """1.0 rows have the same columns; only their masks may be at another size (`records.decode_rle`)."""
    table = pq.read_table(ShardReader(root).paths[0])
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"instvl.schema_version": b"1.0"}), old)
    rows = list(ShardReader(shards=[old]).iter_rows())
    assert [Sample.from_row(r).sample_id for r in rows] == table.column("sample_id").to_pylist()
