"""The training data pipeline: InstVL shards -> decoded, cropped, tokenised batches for InstAP.

Row groups of the shards are shuffled per epoch and dealt to the `world_size * workers` readers, so
ranks and DataLoader workers never read the same row; each reader shuffles its rows through a buffer.
Batches are collated inside the workers (the DataLoader runs with `batch_size=None`) and carry their
`data_position` (worker, epoch, batch index). Every worker streams epochs without end, so the
DataLoader deals batches strictly round-robin; `DataState` records what the trainer consumed, and a
resumed loader rotates the worker roles and skips consumed batches (without decoding them), giving
exactly the batches an uninterrupted run would have seen next.

    dataset = InstVLDataset(cfg.data, tokenizer, max_text_len=32, rank=rank, world_size=world)
    for batch in make_loader(dataset): ...   # batch["video"]: [B, 3, T, H, W]
"""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from instvl.datasets import layout
from instvl.datasets.reader import ShardReader
from instvl.datasets.schema import SampleRow
from instvl.deps import require
from instvl.media.fetch import MediaError
from instvl.train import transforms
from instvl.train.config import DataConfig

torch = require("torch", "train")
from torch.utils.data import DataLoader, IterableDataset, get_worker_info  # noqa: E402

log = logging.getLogger(__name__)
COLUMNS = ["sample_id", "media_type", "media_format", "media", "source", "num_frames", "global_caption",
           "instances", "qc", "split"]


class ShardRow(SampleRow, total=False):
    """A row as training reads it, with the shard it came from (for error messages)."""

    _shard: str


class DataState:
    """What the trainer consumed: batches in all, and per worker the next (epoch, batch index)."""

    def __init__(self) -> None:
        self.batches = 0
        self.workers: dict[int, tuple[int, int]] = {}

    def advance(self, position: tuple[int, int, int]) -> None:
        worker, epoch, index = (int(v) for v in position)
        self.workers[worker] = (epoch, index + 1)
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "workers": {str(k): list(v) for k, v in self.workers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.workers = {int(k): (int(v[0]), int(v[1])) for k, v in state["workers"].items()}


class InstVLDataset(IterableDataset[dict[str, Any]]):
    """Streams collated batches of one rank's share of a dataset root."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, max_text_len: int = 32, *, rank: int = 0,
                 world_size: int = 1, train: bool = True, infinite: bool | None = None):
        self.cfg, self.tokenizer, self.max_text_len = cfg, tokenizer, max_text_len
        self.rank, self.world_size, self.train = rank, world_size, train
        self.infinite = train if infinite is None else infinite
        self.state = DataState()
        self._pieces_cache: list[tuple[Path, int, int]] | None = None
        if not (Path(cfg.root) / layout.SHARDS_DIR).is_dir():
            raise FileNotFoundError(f"{cfg.root}: not an InstVL dataset root (no shards/ folder); set "
                                    "data.root to a folder written by `instvl datasets synth` or the build")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batches a `DataState` recorded (call before iterating)."""
        self.state.load_state_dict(state)

    def _reader(self, columns: list[str] | None = COLUMNS) -> ShardReader:
        return ShardReader(self.cfg.root, columns)

    def epoch_pieces(self, epoch: int, slot: int, slots: int) -> list[tuple[Path, int, int]]:
        """The row groups reader `slot` of `slots` reads in `epoch` (shuffled per epoch in training)."""
        if self._pieces_cache is None:
            self._pieces_cache = self._reader().pieces()
        pieces = self._pieces_cache
        if not pieces:
            raise FileNotFoundError(f"{self.cfg.root}: no finished shards to train on "
                                    "(is the dataset written?)")
        if len(pieces) < slots:
            raise ValueError(f"{self.cfg.root}: {len(pieces)} row groups cannot feed {slots} readers "
                             f"({self.world_size} ranks x {max(1, self.cfg.workers)} workers); use fewer "
                             "workers or write smaller row groups")
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(pieces)) if self.train else \
            np.arange(len(pieces))
        return [pieces[i] for i in order[slot::slots]]

    def iter_rows(self, epoch: int, worker: int = 0, num_workers: int = 1) -> Iterator[ShardRow]:
        """The kept rows (split, QC status) of one reader in one epoch, in their shuffled order."""
        slots, slot = self.world_size * num_workers, self.rank * num_workers + worker
        reader = self._reader()
        rows = (_with_shard(row, path) for path, group, n in self.epoch_pieces(epoch, slot, slots)
                for row in reader.iter_rows([(path, group, n)]) if self._keep(row))
        if not self.train or self.cfg.shuffle_buffer <= 1:
            return rows
        rng = np.random.default_rng([self.cfg.seed, epoch, slot, 1])
        return _shuffled(rows, self.cfg.shuffle_buffer, rng)

    def _keep(self, row: SampleRow) -> bool:
        if self.cfg.split is not None and (row.get("split") or "train") != self.cfg.split:
            return False
        return self.cfg.include_rejected or (row.get("qc") or {}).get("status") != "rejected"

    def prepare(self, row: SampleRow, epoch: int) -> dict[str, Any]:
        """One decoded, resized and cropped sample (the per-sample part of a batch)."""
        return transforms.prepare_sample(row, self.cfg, epoch, self.train)

    def iter_batches(self, epoch: int, worker: int = 0, num_workers: int = 1,
                     skip: int = 0) -> Iterator[dict[str, Any]]:
        """Collated batches of one reader in one epoch, the first `skip` of them passed over undecoded."""
        chunk: list[ShardRow] = []
        index = 0
        for row in self.iter_rows(epoch, worker, num_workers):
            chunk.append(row)
            if len(chunk) == self.cfg.batch_size:
                if index >= skip:
                    yield self._batch(chunk, epoch, worker, index)
                chunk, index = [], index + 1
        if chunk and not (self.train and self.cfg.drop_last) and index >= skip:
            yield self._batch(chunk, epoch, worker, index)

    def _batch(self, rows: list[ShardRow], epoch: int, worker: int, index: int) -> dict[str, Any]:
        samples = [s for s in (self._try_prepare(row, epoch) for row in rows) if s is not None]
        batch = collate(samples, self.tokenizer, self.cfg, self.max_text_len)
        batch["data_position"] = (worker, epoch, index)
        return batch

    def _try_prepare(self, row: ShardRow, epoch: int) -> dict[str, Any] | None:
        try:
            return self.prepare(row, epoch)
        except (MediaError, ValueError) as err:
            message = f"{row['_shard']}: sample {row['sample_id']!r}: {err}"
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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = self._worker()
        epoch, skip = self.state.workers.get(worker, (0, 0))
        while True:
            produced = 0
            for batch in self.iter_batches(epoch, worker, num_workers, skip):
                produced += 1
                yield batch
            if not self.infinite:
                return
            if produced == 0 and skip == 0:
                raise ValueError(f"{self.cfg.root}: reader {worker} of rank {self.rank} got no full batch of "
                                 f"{self.cfg.batch_size} in epoch {epoch}; lower data.batch_size or workers")
            epoch, skip = epoch + 1, 0


def _with_shard(row: SampleRow, path: Path) -> ShardRow:
    return {**row, "_shard": str(path)}


def _shuffled(rows: Iterator[ShardRow], size: int, rng: np.random.Generator) -> Iterator[ShardRow]:
    """A streaming shuffle: keep `size` rows, emit a random one for each new row, then the rest."""
    buffer: list[ShardRow] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        pick = int(rng.integers(len(buffer)))
        buffer[pick], row = row, buffer[pick]
        yield row
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


def make_loader(dataset: InstVLDataset, seed: int = 0) -> DataLoader[dict[str, Any]]:
    """A DataLoader over the dataset's pre-collated batches; its own generator leaves the global RNG alone."""
    workers = dataset.cfg.workers
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed),
                      prefetch_factor=2 if workers else None, persistent_workers=False)


def tokenize(tokenizer: Any, texts: list[str], max_len: int) -> tuple[Any, Any]:
    """Token ids and attention mask (long [n, L]), padded to the longest text; [0, 1] for no text."""
    if not texts:
        return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long)
    out = tokenizer(texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return out["input_ids"].long(), out["attention_mask"].long()


def collate(samples: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig,
            max_text_len: int) -> dict[str, Any]:
    """Prepared samples -> the batch dict the model takes (N instances over all B samples, N may be 0).

    video [B,3,T,S,S] float (normalised); text_ids/text_mask [B,L] long; inst_crops [N,3,T,c,c];
    inst_text_ids/inst_text_mask [N,L']; inst_sample_index [N] (batch row of each instance);
    inst_boxes [N,T,4] xyxy in [0,1] of the model input frame; inst_present [N,T] bool (inside the
    track's span and inside the frame); sample_ids, instance_ids, global_captions, instance_captions lists.
    """
    insts = [(i, inst) for i, sample in enumerate(samples) for inst in sample["instances"]]
    size, crop, frames = cfg.img_size, cfg.crop_size, cfg.num_frames
    text_ids, text_mask = tokenize(tokenizer, [s["global_caption"] for s in samples], max_text_len)
    inst_ids, inst_mask = tokenize(tokenizer, [inst["caption"] for _, inst in insts], max_text_len)
    return {
        "video": _stack([s["video"] for s in samples], (0, 3, frames, size, size)),
        "text_ids": text_ids, "text_mask": text_mask,
        "inst_crops": _stack([inst["crop"] for _, inst in insts], (0, 3, frames, crop, crop)),
        "inst_text_ids": inst_ids, "inst_text_mask": inst_mask,
        "inst_sample_index": torch.tensor([i for i, _ in insts], dtype=torch.long),
        "inst_boxes": _stack([inst["boxes"] for _, inst in insts], (0, frames, 4)),
        "inst_present": _stack([inst["present"] for _, inst in insts], (0, frames), torch.bool),
        "sample_ids": [s["sample_id"] for s in samples],
        "instance_ids": [inst["instance_id"] for _, inst in insts],
        "global_captions": [s["global_caption"] for s in samples],
        "instance_captions": [inst["caption"] for _, inst in insts],
    }


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch with its tensors on `device` (lists of ids and captions stay as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _stack(tensors: list[Any], empty_shape: tuple[int, ...], dtype: Any = None) -> Any:
    if tensors:
        return torch.stack(tensors)
    return torch.zeros(empty_shape, dtype=dtype or torch.float32)
