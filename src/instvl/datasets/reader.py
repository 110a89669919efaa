"""Reading InstVL shards: column projection, row-group streaming, and a split over ranks and workers.

The unit of work is a (shard, row group) pair; pairs are dealt round-robin to the
`world_size * num_workers` readers, so every row is read by exactly one of them.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from instvl.datasets.manifest import list_shards
from instvl.datasets.schema import METADATA_VERSION_KEY, SCHEMA_VERSION, major


class SchemaVersionError(ValueError):
    """A shard written with a schema major version this instvl does not read."""


def check_version(path: Path, schema: pa.Schema) -> None:
    found = (schema.metadata or {}).get(METADATA_VERSION_KEY)
    if found is None:
        raise SchemaVersionError(f"{path}: no {METADATA_VERSION_KEY.decode()} in the file metadata")
    if major(found.decode()) != major(SCHEMA_VERSION):
        raise SchemaVersionError(f"{path}: schema version {found.decode()} (this instvl reads {SCHEMA_VERSION})")


class ShardReader:
    """Streams the rows of a dataset root, or of an explicit list of shard files."""

    def __init__(self, root: str | Path | None = None, columns: Sequence[str] | None = None, *,
                 rank: int = 0, world_size: int = 1, worker_id: int = 0, num_workers: int = 1,
                 batch_rows: int = 64, shards: Sequence[str | Path] | None = None):
        if root is None and shards is None:
            raise ValueError("give a dataset root or a list of shard files")
        if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
            raise ValueError(f"bad split: rank {rank}/{world_size}, worker {worker_id}/{num_workers}")
        self.paths = [Path(p) for p in shards] if shards is not None else list_shards(root)
        self.columns = list(columns) if columns is not None else None
        self.slot, self.slots = rank * num_workers + worker_id, world_size * num_workers
        self.batch_rows = batch_rows

    def pieces(self) -> list[tuple[Path, int, int]]:
        """Every (shard, row group, rows) of the dataset, in a fixed order."""
        out = []
        for path in self.paths:
            meta = pq.read_metadata(path)
            out += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
        return out

    def my_pieces(self) -> list[tuple[Path, int, int]]:
        """The row groups this rank/worker reads."""
        return [piece for i, piece in enumerate(self.pieces()) if i % self.slots == self.slot]

    def num_rows(self) -> int:
        return sum(rows for _path, _group, rows in self.my_pieces())

    def iter_batches(self, pieces: Sequence[tuple[Path, int, int]] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of this reader's row groups (or of `pieces`), one row group in memory at a time."""
        for path, group, _rows in pieces if pieces is not None else self.my_pieces():
            parquet = pq.ParquetFile(path)
            check_version(path, parquet.schema_arrow)
            yield from parquet.iter_batches(batch_size=self.batch_rows, row_groups=[group], columns=self.columns)

    def iter_rows(self, pieces: Sequence[tuple[Path, int, int]] | None = None) -> Iterator[dict[str, Any]]:
        """Row dicts (the shape `Sample.from_row` takes)."""
        for batch in self.iter_batches(pieces):
            yield from batch.to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_rows()


def read_table(root: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole dataset as one table (for small datasets and tests)."""
    batches = list(ShardReader(root, columns).iter_batches())
    if not batches:
        from instvl.datasets.schema import SCHEMA

        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        return schema.empty_table()
    return pa.Table.from_batches(batches)
