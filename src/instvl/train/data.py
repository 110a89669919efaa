"""The training data pipeline: InstVL shards and annotation lists -> decoded, cropped, tokenised batches.

Sources and streams. `data.root` and every entry of `data.sources` is a source (a shard root or an
annotation list); each source is split into an image stream and a video stream, because a batch holds
only images (1-frame clips, `image_batch_size`) or only videos. Each training batch comes from one
stream, chosen by the `Mixer` from the stream weights (UMT/InternVideo's MetaLoader): a source's share
is its `ratio`, and within it the video share is `video_share` or, by default, what makes both streams
finish an epoch together. The choice depends only on (seed, batch number), so every rank takes the same
kind of batch at the same step, and over each block of `MIX_BLOCK` batches every stream gets exactly
its share.

Readers. Row groups of a shard root (entries of an annotation list) are shuffled per epoch and dealt to
the `world_size * workers` readers, so ranks and DataLoader workers never read the same row; each stream
of each reader shuffles its rows through a buffer bounded in rows and in media bytes. A stream skips the
row groups that hold none of its media (known from the small filter columns), so a row group is read
twice per epoch only when it holds both images and videos. Batches are collated inside the workers (the
DataLoader runs with `batch_size=None`) and carry their `data_position` (worker, batch index, and per
stream the (epoch, rows taken) after the batch). Workers stream without end and the DataLoader deals
batches round-robin; `DataState` records what the trainer consumed, and a resumed loader rotates the
worker roles and fast-forwards every stream to its recorded row (reading, not decoding), giving exactly
the batches an uninterrupted run would have seen next.

Evaluation (`train=False`) reads `data.root` only (or the `sources` given to the dataset), in order,
once, and emits image and video batches as they fill.

    dataset = InstVLDataset(cfg.data, tokenizer, max_text_len=32, rank=rank, world_size=world)
    for batch in make_loader(dataset): ...   # batch["video"]: [B, 3, T, H, W], T = 1 for images
"""

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instvl.datasets import layout
from instvl.datasets.reader import ShardReader
from instvl.datasets.schema import SampleRow
from instvl.deps import require
from instvl.media.fetch import MediaError
from instvl.qa.routing import awaiting_review
from instvl.train import transforms
from instvl.train.batch import collate
from instvl.train.config import DataConfig, SourceConfig

torch = require("torch", "train")
from torch.utils.data import DataLoader, IterableDataset, get_worker_info  # noqa: E402

log = logging.getLogger(__name__)
COLUMNS = ["sample_id", "media_type", "media_format", "media", "source", "num_frames", "global_caption",
           "instances", "qc", "split"]
FILTER_COLUMNS = ["media_type", "split", "qc"]
MEDIA_TYPES = ("video", "image")
MIX_BLOCK = 1000
"""Batches per mixing block: each stream's share is exact (to 1/MIX_BLOCK) within every block."""
ROW_OVERHEAD_BYTES = 2048
"""What a buffered row costs besides its media bytes (captions, trajectories), for the byte bound."""


class ShardRow(SampleRow, total=False):
    """A row as training reads it, with where it came from (shard or list:line, for error messages)."""

    _shard: str
    captions: list[str]


StreamPosition = tuple[int, int]
"""(epoch, rows of that epoch taken) of one stream of one reader."""


class DataState:
    """What the trainer consumed: batches in all, and per worker its next batch and its streams' positions.

    `start_epoch` is where streams without a recorded position begin (see `next_epoch`).
    """

    def __init__(self) -> None:
        self.batches = 0
        self.start_epoch = 0
        self.workers: dict[int, dict[str, Any]] = {}

    def advance(self, position: tuple[int, int, dict[str, StreamPosition]]) -> None:
        worker, index, streams = position
        self.workers[int(worker)] = {"next": int(index) + 1,
                                     "streams": {k: (int(e), int(n)) for k, (e, n) in streams.items()}}
        self.batches += 1

    def next_epoch(self) -> "DataState":
        """A fresh state whose streams start at the epoch after the furthest one any stream reached: where
        a run continues when its data position cannot carry over (another number of ranks or workers)."""
        epochs = [e for w in self.workers.values() for e, _ in w["streams"].values()]
        state = DataState()
        state.start_epoch = max(epochs, default=self.start_epoch - 1) + 1
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "start_epoch": self.start_epoch,
                "workers": {str(k): {"next": v["next"],
                                     "streams": {s: list(p) for s, p in v["streams"].items()}}
                            for k, v in self.workers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        workers = state.get("workers") or {}
        if any(isinstance(v, list | tuple) for v in workers.values()):
            # A checkpoint of the single-stream loader: its positions do not map onto streams.
            epochs = [int(v[0]) for v in workers.values()]
            log.warning("data position of the single-stream loader: continuing at epoch %d", max(epochs) + 1)
            self.batches, self.start_epoch, self.workers = 0, max(epochs) + 1, {}
            return
        self.batches = int(state["batches"])
        self.start_epoch = int(state.get("start_epoch", 0))
        self.workers = {int(k): {"next": int(v["next"]),
                                 "streams": {s: (int(p[0]), int(p[1])) for s, p in v["streams"].items()}}
                        for k, v in workers.items()}


class Mixer:
    """Which stream each batch comes from: exact shares per block of `block` batches, shuffled per block.

    `choose(k)` depends only on (seed, k), so all ranks agree and a resumed run continues the sequence.
    """

    def __init__(self, weights: dict[str, float], seed: int, block: int = MIX_BLOCK):
        total = sum(weights.values())
        if not weights or total <= 0:
            raise ValueError("no stream to draw batches from (every source is empty or has ratio 0)")
        self.keys = list(weights)
        exact = np.array([weights[k] / total * block for k in self.keys])
        counts = np.floor(exact).astype(np.int64)
        for i in np.argsort(-(exact - counts), kind="stable")[: block - int(counts.sum())]:
            counts[i] += 1  # largest remainders
        self.counts = dict(zip(self.keys, counts.tolist(), strict=True))
        self.seed, self.block = seed, block
        self._slots = np.repeat(np.arange(len(self.keys)), counts)
        self._cached: tuple[int, NDArray[Any]] | None = None

    def choose(self, k: int) -> str:
        number, position = divmod(k, self.block)
        if self._cached is None or self._cached[0] != number:
            order = np.random.default_rng([self.seed, number, 11]).permutation(self._slots)
            self._cached = (number, order)
        return self.keys[int(self._cached[1][position])]


class Source:
    """Rows of one dataset (a shard root or an annotation list) that pass the split and QC filters."""

    def __init__(self, spec: SourceConfig, cfg: DataConfig, index: int):
        self.spec, self.cfg, self.index = spec, cfg, index
        self.name = spec.root

    def counts(self) -> dict[str, int]:
        """Kept rows per media type."""
        raise NotImplementedError

    def epoch_rows(self, epoch: int, slot: int, slots: int, shuffle: bool,
                   media: str | None = None) -> Iterator[ShardRow]:
        """The kept rows of reader `slot` of `slots` in `epoch` (their share shuffled per epoch), only those
        of `media` when given."""
        raise NotImplementedError


class ShardSource(Source):
    """A dataset root written by instvl; row groups are the unit dealt to readers."""

    def __init__(self, spec: SourceConfig, cfg: DataConfig, index: int):
        super().__init__(spec, cfg, index)
        if not (Path(spec.root) / layout.SHARDS_DIR).is_dir():
            raise FileNotFoundError(f"{spec.root}: not an InstVL dataset root (no shards/ folder); set "
                                    "data.root to a folder written by `instvl datasets synth` or the build")
        self._pieces: list[tuple[Path, int, int]] | None = None
        self._piece_counts: list[Counter[str]] | None = None

    def keep(self, row: SampleRow) -> bool:
        if self.spec.split is not None and (row.get("split") or "train") != self.spec.split:
            return False
        if not self.cfg.include_unreviewed and awaiting_review(row.get("qc")):
            return False
        return self.cfg.include_rejected or (row.get("qc") or {}).get("status") != "rejected"

    def pieces(self) -> list[tuple[Path, int, int]]:
        if self._pieces is None:
            self._pieces = ShardReader(self.spec.root, COLUMNS).pieces()
        if not self._pieces:
            raise FileNotFoundError(f"{self.spec.root}: no finished shards to train on "
                                    "(is the dataset written?)")
        return self._pieces

    def piece_counts(self) -> list[Counter[str]]:
        """Kept rows per media type of each row group (from the small filter columns only)."""
        if self._piece_counts is None:
            reader = ShardReader(self.spec.root, FILTER_COLUMNS)
            self._piece_counts = [Counter(row.get("media_type") or "video"
                                          for row in reader.iter_rows([piece]) if self.keep(row))
                                  for piece in self.pieces()]
        return self._piece_counts

    def counts(self) -> dict[str, int]:
        return dict(sum(self.piece_counts(), Counter()))

    def epoch_rows(self, epoch: int, slot: int, slots: int, shuffle: bool,
                   media: str | None = None) -> Iterator[ShardRow]:
        # The image and the video stream of a reader each walk its row groups: a row group without rows
        # of the stream's media is not read at all, and in a mixed one only the stream's rows become
        # Python objects (a row group holding both media is still read by both streams).
        pieces = self.pieces()
        if len(pieces) < slots:
            raise ValueError(f"{self.spec.root}: {len(pieces)} row groups cannot feed {slots} readers; use "
                             "fewer workers or write smaller row groups")
        order = (np.random.default_rng([self.cfg.seed, epoch, self.index]).permutation(len(pieces)) if shuffle
                 else np.arange(len(pieces)))
        wanted = self.piece_counts() if media is not None else None
        reader = ShardReader(self.spec.root, COLUMNS)
        for i in order[slot::slots]:
            if wanted is not None and not wanted[i][media]:
                continue
            path = str(pieces[i][0])
            for batch in reader.iter_batches([pieces[i]]):
                if media is not None:
                    batch = batch.filter(of_media(batch, media))
                for row in batch.to_pylist():
                    if self.keep(row):
                        yield {**row, "_shard": path}  # type: ignore[typeddict-item]


class AnnotationSource(Source):
    """An annotation list (`instvl.train.annotations`): global captions only, entries dealt to readers."""

    def __init__(self, spec: SourceConfig, cfg: DataConfig, index: int):
        from instvl.train.annotations import read_annotations

        super().__init__(spec, cfg, index)
        self.rows = [entry.to_row(spec.root) for entry in read_annotations(spec.root, spec.media_root)]

    def counts(self) -> dict[str, int]:
        return dict(Counter(row["media_type"] for row in self.rows))

    def epoch_rows(self, epoch: int, slot: int, slots: int, shuffle: bool,
                   media: str | None = None) -> Iterator[ShardRow]:
        order = (np.random.default_rng([self.cfg.seed, epoch, self.index]).permutation(len(self.rows))
                 if shuffle else np.arange(len(self.rows)))
        for i in order[slot::slots]:
            if media is None or self.rows[i]["media_type"] == media:
                yield self.rows[i]


def of_media(batch: Any, media: str) -> Any:
    """Boolean mask of the rows of an Arrow record batch whose media type is `media` (unset: video)."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(batch.column("media_type"), media), media == "video")


def make_source(spec: SourceConfig, cfg: DataConfig, index: int) -> Source:
    kind = AnnotationSource if spec.format == "annotations" else ShardSource
    return kind(spec, cfg, index)


def stream_weights(sources: list[Source], cfg: DataConfig) -> dict[str, float]:
    """{'<source>:<media type>': weight} of the non-empty streams (see the module docstring)."""
    weights: dict[str, float] = {}
    for source in sources:
        counts = source.counts()
        batches = {m: counts.get(m, 0) / cfg.batch_size_for(m) for m in MEDIA_TYPES}
        if not sum(batches.values()):
            raise ValueError(f"{source.name}: no rows to train on (split {source.spec.split!r})")
        share = source.spec.video_share
        if share is None:
            share = batches["video"] / sum(batches.values())
        for media, part in (("video", share), ("image", 1 - share)):
            if part > 0 and counts.get(media, 0):
                weights[f"{source.index}:{media}"] = source.spec.ratio * part
            elif part > 0:
                raise ValueError(f"{source.name}: video_share={source.spec.video_share} asks for {media} "
                                 f"batches but the source has no {media} rows")
    return weights


def row_bytes(row: ShardRow) -> int:
    """What a buffered row holds in memory, roughly: its media bytes plus a fixed overhead."""
    media = row.get("media")
    return (len(media) if isinstance(media, bytes | bytearray) else 0) + ROW_OVERHEAD_BYTES


class RowStream:
    """The rows of one (source, media type) of one reader, epoch after epoch, with its position."""

    def __init__(self, source: Source, media: str | None, cfg: DataConfig, slot: int, slots: int,
                 shuffle: bool, position: StreamPosition):
        self.source, self.media, self.cfg = source, media, cfg
        self.slot, self.slots, self.shuffle = slot, slots, shuffle
        self.epoch, self.taken = position
        self._rows = self._epoch_iter(skip=self.taken)

    def _epoch_iter(self, skip: int) -> Iterator[ShardRow]:
        rows: Iterator[ShardRow] = (
            row for row in self.source.epoch_rows(self.epoch, self.slot, self.slots, self.shuffle, self.media)
            if self.media is None or (row.get("media_type") or "video") == self.media)
        if self.shuffle and self.cfg.shuffle_buffer > 1:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, self.slot, self.source.index,
                                         MEDIA_TYPES.index(self.media) if self.media else 2, 1])
            rows = shuffled(rows, self.cfg.shuffle_buffer, int(self.cfg.shuffle_buffer_mb * 2**20), rng)
        for _ in range(skip):  # fast-forward on resume: read, do not decode
            if next(rows, None) is None:
                break
        return rows

    def take(self, count: int) -> list[tuple[int, ShardRow]]:
        """The next `count` rows with the epoch each belongs to (wrapping into the next epochs)."""
        out: list[tuple[int, ShardRow]] = []
        empty_epochs = 0
        while len(out) < count:
            row = next(self._rows, None)
            if row is None:
                empty_epochs = empty_epochs + 1 if self.taken == 0 else 0
                if empty_epochs > 1:
                    raise ValueError(f"{self.source.name}: reader {self.slot} of {self.slots} gets no "
                                     f"{self.media or ''} rows in an epoch; use fewer workers or ranks")
                self.epoch, self.taken = self.epoch + 1, 0
                self._rows = self._epoch_iter(skip=0)
                continue
            out.append((self.epoch, row))
            self.taken += 1
        return out

    @property
    def position(self) -> StreamPosition:
        return self.epoch, self.taken


class InstVLDataset(IterableDataset[dict[str, Any]]):
    """Streams collated batches of one rank's share of the configured sources."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, max_text_len: int = 32, *, rank: int = 0,
                 world_size: int = 1, train: bool = True, infinite: bool | None = None,
                 sources: list[SourceConfig] | None = None):
        self.cfg, self.tokenizer, self.max_text_len = cfg, tokenizer, max_text_len
        # Instance captions are cut shorter in training only (data.instance_text_len); evaluation reads
        # them at the text tower's max_len, like the global captions.
        self.inst_text_len = (cfg.instance_text_len or max_text_len) if train else max_text_len
        self.rank, self.world_size, self.train = rank, world_size, train
        self.infinite = train if infinite is None else infinite
        self.state = DataState()
        specs = sources if sources is not None else cfg.all_sources() if train else cfg.all_sources()[:1]
        self.sources = [make_source(spec, cfg, i) for i, spec in enumerate(specs)]
        self._mixer: Mixer | None = None

    @property
    def mixer(self) -> Mixer:
        """The stream mixer (counting each source's rows once, on first use)."""
        if self._mixer is None:
            self._mixer = Mixer(stream_weights(self.sources, self.cfg), self.cfg.seed)
        return self._mixer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batches a `DataState` recorded (call before iterating)."""
        self.state.load_state_dict(state)

    def iter_rows(self, epoch: int, worker: int = 0, num_workers: int = 1) -> Iterator[ShardRow]:
        """The kept rows of every source for one reader in one epoch (shuffled in training, both media)."""
        slots, slot = self.world_size * num_workers, self.rank * num_workers + worker
        for source in self.sources:
            stream = RowStream(source, None, self.cfg, slot, slots, self.train, (epoch, 0))
            yield from stream._rows

    def prepare(self, row: SampleRow, epoch: int) -> dict[str, Any]:
        """One decoded, resized and cropped sample (the per-sample part of a batch)."""
        return transforms.prepare_sample(row, self.cfg, epoch, self.train)

    def _batch(self, rows: list[tuple[int, ShardRow]], position: Any) -> dict[str, Any]:
        samples = [s for s in (self._try_prepare(row, epoch) for epoch, row in rows) if s is not None]
        batch = collate(samples, self.tokenizer, self.cfg, self.max_text_len, self.inst_text_len)
        batch["data_position"] = position
        return batch

    def _try_prepare(self, row: ShardRow, epoch: int) -> dict[str, Any] | None:
        try:
            return self.prepare(row, epoch)
        except (MediaError, ValueError) as err:
            message = f"{row.get('_shard')}: sample {row['sample_id']!r}: {err}"
            if self.cfg.on_decode_error == "raise":
                raise ValueError(message) from err
            log.warning("skipped %s", message)
            return None

    def _worker(self) -> tuple[int, int]:
        """(logical worker id, workers): DataLoader slots rotated so a resumed run starts where it stopped."""
        info = get_worker_info()
        if info is None:
            return 0, 1
        return (info.id + self.state.batches) % info.num_workers, info.num_workers

    def iter_batches(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """The batches of one logical worker: mixed streams without end (training) or one ordered pass."""
        if not self.infinite:
            yield from self._one_pass(worker, num_workers)
            return
        slots, slot = self.world_size * num_workers, self.rank * num_workers + worker
        saved = self.state.workers.get(worker, {"next": 0, "streams": {}})
        start = (self.state.start_epoch, 0)
        streams: dict[str, RowStream] = {}
        index = saved["next"]
        while True:
            key = self.mixer.choose(index * num_workers + worker)
            if key not in streams:
                source, media = key.split(":")
                streams[key] = RowStream(self.sources[int(source)], media, self.cfg, slot, slots, self.train,
                                         saved["streams"].get(key, start))
            rows = streams[key].take(self.cfg.batch_size_for(key.split(":")[1]))
            positions = {**saved["streams"], **{k: s.position for k, s in streams.items()}}
            yield self._batch(rows, (worker, index, positions))
            index += 1

    def _one_pass(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        """Every kept row once, in order (shuffled in training), as image and video batches."""
        chunks: dict[str, list[tuple[int, ShardRow]]] = {m: [] for m in MEDIA_TYPES}
        index = 0
        epoch = self.state.start_epoch
        for row in self.iter_rows(epoch, worker, num_workers):
            media = row.get("media_type") or "video"
            media = media if media in chunks else "video"
            chunks[media].append((epoch, row))
            if len(chunks[media]) == self.cfg.batch_size_for(media):
                yield self._batch(chunks[media], (worker, index, {}))
                chunks[media], index = [], index + 1
        for chunk in chunks.values():
            if chunk and not (self.train and self.cfg.drop_last):
                yield self._batch(chunk, (worker, index, {}))
                index += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = self._worker()
        return self.iter_batches(worker, num_workers)


class ShuffleBuffer:
    """A streaming shuffle buffer bounded in rows (`size`) and in bytes (`max_bytes`, by `row_bytes`).

    `push(row)` first emits random buffered rows until the new one fits, then holds it; a row that alone
    exceeds `max_bytes` passes straight through. `held_bytes` never exceeds `max_bytes`.
    """

    def __init__(self, size: int, max_bytes: int, rng: np.random.Generator):
        self.size, self.max_bytes, self.rng = size, max_bytes, rng
        self.rows: list[ShardRow] = []
        self.held_bytes = 0

    def push(self, row: ShardRow) -> Iterator[ShardRow]:
        cost = row_bytes(row)
        if cost > self.max_bytes:
            yield row
            return
        while self.rows and (len(self.rows) >= self.size or self.held_bytes + cost > self.max_bytes):
            pick = int(self.rng.integers(len(self.rows)))
            self.rows[pick], self.rows[-1] = self.rows[-1], self.rows[pick]
            out = self.rows.pop()
            self.held_bytes -= row_bytes(out)
            yield out
        self.rows.append(row)
        self.held_bytes += cost

    def drain(self) -> Iterator[ShardRow]:
        rows, self.rows, self.held_bytes = self.rows, [], 0
        for i in self.rng.permutation(len(rows)):
            yield rows[i]


def shuffled(rows: Iterator[ShardRow], size: int, max_bytes: int,
             rng: np.random.Generator) -> Iterator[ShardRow]:
    """`rows` shuffled through a `ShuffleBuffer` of `size` rows and `max_bytes`, then the rest."""
    buffer = ShuffleBuffer(size, max_bytes, rng)
    for row in rows:
        yield from buffer.push(row)
    yield from buffer.drain()


def make_loader(dataset: InstVLDataset, seed: int = 0) -> DataLoader[dict[str, Any]]:
    """A DataLoader over the dataset's pre-collated batches; its own generator leaves the global RNG alone."""
    workers = dataset.cfg.workers
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed),
                      prefetch_factor=2 if workers else None, persistent_workers=False)
