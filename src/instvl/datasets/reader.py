"""Reading InstVL shards: column projection and row-group streaming.

The unit of work is a (shard, row group, rows) piece. Training deals the pieces to ranks and
DataLoader workers itself, with a per-epoch shuffle (`instvl.train.data.InstVLDataset.epoch_pieces`),
and streams its share through `iter_rows(pieces)`.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from instvl.datasets.manifest import list_shards
from instvl.datasets.schema import METADATA_VERSION_KEY, SCHEMA_VERSION, SampleRow, major


class SchemaVersionError(ValueError):
    """A shard written with a schema major version this instvl does not read."""


def check_version(path: Path, schema: pa.Schema) -> None:
    found = (schema.metadata or {}).get(METADATA_VERSION_KEY)
    if found is None:
        raise SchemaVersionError(f"{path}: no {METADATA_VERSION_KEY.decode()} in the file metadata")
    if major(found.decode()) != major(SCHEMA_VERSION):
        raise SchemaVersionError(f"{path}: schema version {found.decode()} "
                                 f"(this instvl reads {SCHEMA_VERSION})")


class ShardReader:
    """Streams the rows of a dataset root, or of an explicit list of shard files."""

    def __init__(self, root: str | Path | None = None, columns: Sequence[str] | None = None, *,
                 batch_rows: int = 64, shards: Sequence[str | Path] | None = None):
        if shards is not None:
            self.paths = [Path(p) for p in shards]
        elif root is not None:
            self.paths = list_shards(root)
        else:
            raise ValueError("give a dataset root or a list of shard files")
        self.columns = list(columns) if columns is not None else None
        self.batch_rows = batch_rows

    def pieces(self) -> list[tuple[Path, int, int]]:
        """Every (shard, row group, rows) of the dataset, in a fixed order."""
        out = []
        for path in self.paths:
            meta = pq.read_metadata(path)
            out += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
        return out

    def num_rows(self) -> int:
        return sum(rows for _path, _group, rows in self.pieces())

    def iter_batches(self, pieces: Sequence[tuple[Path, int, int]] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of every row group (or of `pieces`), one row group in memory at a time."""
        for path, group, _rows in pieces if pieces is not None else self.pieces():
            parquet = pq.ParquetFile(path, page_checksum_verification=True)  # a flipped bit raises
            check_version(path, parquet.schema_arrow)
            yield from parquet.iter_batches(batch_size=self.batch_rows, row_groups=[group],
                                            columns=self.columns)

    def iter_rows(self, pieces: Sequence[tuple[Path, int, int]] | None = None) -> Iterator[SampleRow]:
        """Row dicts (the shape `Sample.from_row` takes), with the selected columns only."""
        for batch in self.iter_batches(pieces):
            yield from batch.to_pylist()

    def __iter__(self) -> Iterator[SampleRow]:
        return self.iter_rows()


def read_table(root: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole dataset as one table (for small datasets and tests)."""
    batches = list(ShardReader(root, columns).iter_batches())
    if not batches:
        from instvl.datasets.schema import SCHEMA

        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        return schema.empty_table()
    return pa.Table.from_batches(batches)
