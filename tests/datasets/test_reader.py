"""ShardReader: ranks x workers split the rows exactly, columns are projected, batches are bounded."""

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instvl.datasets.reader import SchemaVersionError, ShardReader, read_table
from instvl.datasets.records import Sample


@pytest.fixture
def root(make_dataset):
    return make_dataset(units=3, per_unit=7, row_group_rows=3)  # 3 shards x 3 row groups (3, 3, 1 rows)


def test_ranks_and_workers_cover_every_row_once(root):
    seen = Counter()
    per_slot = []
    for rank in range(2):
        for worker in range(2):
            reader = ShardReader(root, ["sample_id"], rank=rank, world_size=2, worker_id=worker, num_workers=2)
            ids = [row["sample_id"] for row in reader.iter_rows()]
            assert len(ids) == reader.num_rows()
            per_slot.append(len(ids))
            seen.update(ids)
    assert seen == Counter({f"s-{i:05d}": 1 for i in range(21)})
    assert all(n > 0 for n in per_slot)


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


def test_bad_split_arguments(root):
    with pytest.raises(ValueError, match="bad split"):
        ShardReader(root, rank=2, world_size=2)
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
