"""Writing InstVL shards: one work unit at a time, atomically, with its stats file written last.

A unit is the deterministic slice of samples that one task writes (e.g. `shard-00007`). Its rows go to
hidden temporary Parquet parts (rotated at `target_shard_bytes`, row groups of `row_group_rows` rows
for streaming); on success the parts are renamed into place, quarantined inputs are written beside
them, and the stats file that marks the unit done comes last. A writer killed half-way leaves only
hidden temporary files, which the next writer of the same unit removes.

One writer per unit and one build per root: a writer holds the unit's lease (an fcntl lock on
ROOT/.leases/<unit>.lock) while it runs, so a second writer of the same unit (a duplicate task, a
concurrent build) fails with `RootBusyError` instead of deleting the first one's files; `lock_root`
holds ROOT/.lock for a whole build, so a second build on the same root refuses with who holds it.
A row that Arrow cannot encode is quarantined at stage "write" and the unit's other rows are kept.

    with UnitWriter(root, "shard-00000", config=cfg) as writer:
        for sample in samples:
            writer.write(sample)
    write_manifest(root)
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from instvl import __version__
from instvl.config import config_hash
from instvl.datasets import layout
from instvl.datasets.manifest import ShardEntry, UnitStats, sha256_file, unit_done
from instvl.datasets.records import Sample
from instvl.datasets.schema import QUARANTINE_SCHEMA, SCHEMA_VERSION, SampleRow, schema_with_metadata

log = logging.getLogger(__name__)


class RootBusyError(RuntimeError):
    """Another process holds the lock of the root (a build) or of the unit (a writer)."""


def safe_text(text: str) -> str:
    """`text` as valid UTF-8: a file name that is not UTF-8 (surrogate-escaped by the OS layer) keeps
    its raw bytes as `\\xNN` escapes, so it is stored losslessly instead of failing the row."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _try_lock(path: Path) -> int:
    """An fd holding an exclusive fcntl lock on `path`; RootBusyError naming the holder otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RootBusyError(f"{path}: held by {holder}") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{datetime.now(UTC).isoformat(timespec='seconds')}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    # The file stays: removing it would let a third process lock a new inode while a second waits on the old.
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def lock_root(root: str | Path) -> Iterator[None]:
    """Hold ROOT/.lock while a build plans, runs and writes the manifest: one build per root.

    A second build on the same root raises RootBusyError with the holder's pid, host and start time.
    The lock is released when the process dies (kill -9 included), so it never needs cleaning up.
    """
    root = Path(root)
    try:
        fd = _try_lock(root / layout.LOCK_FILE)
    except RootBusyError as err:
        raise RootBusyError(f"{root} is being built by another process ({err}); wait for it to end, or "
                            "write to another output folder") from None
    try:
        yield
    finally:
        _unlock(fd)


class UnitWriter:
    """Writes the samples of one unit; see the module docstring."""

    def __init__(self, root: str | Path, unit_id: str, *, config: BaseModel | dict[str, Any] | None = None,
                 target_shard_bytes: int = 256 << 20, row_group_rows: int = 32, compression: str = "zstd",
                 overwrite: bool = False, sources: int | None = None):
        self.root, self.unit_id = Path(root), layout.check_unit_id(unit_id)
        self.target_shard_bytes, self.row_group_rows = target_shard_bytes, max(1, row_group_rows)
        self.compression, self.overwrite = compression, overwrite
        self.config_json, self.config_hash = _config_fields(config)
        self.schema = schema_with_metadata(self.config_json)
        self.stats: UnitStats | None = None
        """The unit's stats, set once the unit is finished."""
        self.sources = sources
        """Input files of the unit, recorded in its stats (None: the writer has no input files)."""
        self._buffer: list[SampleRow] = []
        self._quarantine: list[dict[str, Any]] = []
        self._parts: list[tuple[Path, Path, int]] = []  # (tmp, final, rows)
        self._writer: pq.ParquetWriter | None = None
        self._sample_ids: set[str] = set()
        self._instances = 0
        self._started = 0.0
        self._lease: int | None = None

    def __enter__(self) -> "UnitWriter":
        try:
            self._lease = _try_lock(layout.lease_path(self.root, self.unit_id))
        except RootBusyError as err:
            raise RootBusyError(f"unit {self.unit_id} is being written by another writer ({err})") from None
        try:
            if unit_done(self.root, self.unit_id) and not self.overwrite:
                raise FileExistsError(f"{layout.stats_path(self.root, self.unit_id)}: unit already written "
                                      "(check unit_done() first, or pass overwrite=True)")
            self._clear_unit()
            (self.root / layout.SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        except BaseException:
            self._release()
            raise
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc_type is not None:
                self._abort()
                return
            self._finish()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lease is not None:
            _unlock(self._lease)
            self._lease = None

    @property
    def num_written(self) -> int:
        """Samples written so far in this unit."""
        return len(self._sample_ids)

    def write(self, sample: Sample | SampleRow) -> None:
        """Queue one sample (a Sample or a row dict in the SCHEMA shape)."""
        row = sample.to_row() if isinstance(sample, Sample) else sample
        source = row.get("source")
        raw_uri = source.get("uri") if isinstance(source, dict) else None
        if source is not None and raw_uri is not None:
            uri = safe_text(raw_uri)
            if uri != raw_uri:
                log.warning("file name is not UTF-8; stored with its raw bytes escaped: %s", uri)
                row = {**row, "source": {**source, "uri": uri}}
        sample_id = row["sample_id"]
        if sample_id in self._sample_ids:
            raise ValueError(f"unit {self.unit_id}: sample_id {sample_id!r} written twice")
        self._sample_ids.add(sample_id)
        self._instances += len(row.get("instances") or [])
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_rows:
            self._flush_row_group()

    def quarantine(self, uri: str, reason: str, stage: str, sample_id: str | None = None) -> None:
        """Record an input that could not become a sample, with the reason."""
        uri, reason = safe_text(uri), safe_text(reason)
        log.warning("quarantined %s at %s: %s", uri, stage, reason)
        self._quarantine.append({"uri": uri, "sample_id": sample_id, "stage": stage, "reason": reason,
                                 "created_at": datetime.now(UTC)})

    def _table(self, rows: list[SampleRow]) -> pa.Table:
        """The rows as a table; a row Arrow cannot encode is quarantined (stage "write"), not the batch."""
        try:
            return pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError):
            pass
        good = []
        for row in rows:
            try:
                pa.Table.from_pylist([row], schema=self.schema)
            except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError) as err:
                source = row.get("source")
                uri = source.get("uri") if isinstance(source, dict) else None
                uri = str(uri or row.get("sample_id"))
                self.quarantine(uri, f"row not writable: {type(err).__name__}: {err}", "write",
                                row.get("sample_id"))
                self._sample_ids.discard(row.get("sample_id"))
                self._instances -= len(row.get("instances") or [])
                continue
            good.append(row)
        return pa.Table.from_pylist(good, schema=self.schema)

    def _flush_row_group(self) -> None:
        if not self._buffer:
            return
        table = self._table(self._buffer)
        self._buffer = []
        if table.num_rows == 0:
            return
        if self._writer is None:
            final = layout.shard_path(self.root, self.unit_id, len(self._parts))
            tmp = layout.tmp_path(final)
            # Page checksums: readers verify them, so a flipped bit is an error, not a different row.
            self._writer = pq.ParquetWriter(tmp, self.schema, compression=self.compression,
                                            write_page_checksum=True)
            self._parts.append((tmp, final, 0))
        self._writer.write_table(table, row_group_size=table.num_rows)
        tmp, final, rows = self._parts[-1]
        self._parts[-1] = (tmp, final, rows + table.num_rows)
        if tmp.stat().st_size >= self.target_shard_bytes:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _finish(self) -> None:
        self._flush_row_group()
        self._close_part()
        shards = [self._publish(tmp, final, rows) for tmp, final, rows in self._parts]
        quarantine = self._publish_quarantine()
        if shards:
            layout.fsync_dir(self.root / layout.SHARDS_DIR)
        stats = UnitStats(
            unit_id=self.unit_id, schema_version=SCHEMA_VERSION, instvl_version=__version__,
            rows=sum(s.rows for s in shards), instances=self._instances, quarantined=len(self._quarantine),
            quarantine_path=quarantine, config_hash=self.config_hash,
            seconds=round(time.monotonic() - self._started, 3), finished_at=datetime.now(UTC).isoformat(),
            shards=shards, sources=self.sources)
        # Last: the stats file is the done marker that readers and reruns trust.
        stats.write(layout.stats_path(self.root, self.unit_id))
        self.stats = stats

    def _publish(self, tmp: Path, final: Path, rows: int) -> ShardEntry:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        meta = pq.read_metadata(tmp)
        entry = ShardEntry(path=str(final.relative_to(self.root)), rows=rows, bytes=tmp.stat().st_size,
                           row_groups=meta.num_row_groups, sha256=sha256_file(tmp))
        os.replace(tmp, final)
        return entry

    def _publish_quarantine(self) -> str | None:
        if not self._quarantine:
            return None
        final = layout.quarantine_path(self.root, self.unit_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = layout.tmp_path(final)
        pq.write_table(pa.Table.from_pylist(self._quarantine, schema=QUARANTINE_SCHEMA), tmp,
                       write_page_checksum=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        layout.fsync_dir(final.parent)
        return str(final.relative_to(self.root))

    def _abort(self) -> None:
        try:
            self._close_part()
        finally:
            for tmp, _final, _rows in self._parts:
                tmp.unlink(missing_ok=True)

    def _clear_unit(self) -> None:
        """Remove leftovers of an earlier, interrupted (or overwritten) attempt at this unit."""
        for folder_name in (layout.SHARDS_DIR, layout.STATS_DIR, layout.QUARANTINE_DIR):
            folder = self.root / folder_name
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.removeprefix(layout.TMP_PREFIX).split("-", 1)[-1] if path.name.startswith(
                    layout.TMP_PREFIX) else path.name
                if _belongs_to(name, self.unit_id):
                    path.unlink()


def _belongs_to(file_name: str, unit_id: str) -> bool:
    stem = file_name.split(".", 1)[0]
    return stem == unit_id or (stem.startswith(unit_id + "-") and stem[len(unit_id) + 1:].isdigit())


def _config_fields(config: BaseModel | dict[str, Any] | None) -> tuple[str | None, str | None]:
    if config is None:
        return None, None
    if isinstance(config, BaseModel):
        return config.model_dump_json(), config_hash(config)
    text = json.dumps(config, sort_keys=True, default=str)
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]
