"""Writing InstVL-Synth: unit by unit into InstVL shards, or as raw MP4/JPEG files plus ground truth.

Samples are dealt into units of `samples_per_shard` consecutive indices (unit k is `shard-{k:05d}`).
A finished unit is skipped on a rerun, so an interrupted run resumes where it stopped; a finished unit
written with another configuration is an error rather than a silent mix.

Raw layout: OUT/media/<sample_id>.mp4|.jpg, OUT/units/<unit>.jsonl (one line per sample, written last:
the unit's done marker) and OUT/ground_truth.jsonl (all units, in sample order). Boxes there are xyxy
normalised to [0, 1], as in the shards.
"""

import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from instvl.config import ConfigError
from instvl.datasets import layout
from instvl.datasets.manifest import UnitStats, unit_done, write_manifest
from instvl.datasets.records import Sample
from instvl.datasets.synth.config import SynthConfig
from instvl.datasets.synth.generate import generate_sample
from instvl.datasets.writer import UnitWriter

log = logging.getLogger(__name__)

RAW_MEDIA_DIR = "media"
RAW_UNITS_DIR = "units"
GROUND_TRUTH = "ground_truth.jsonl"
EXTENSIONS = {"mp4": ".mp4", "jpeg": ".jpg"}


@dataclass(slots=True)
class SynthSummary:
    """What a run did."""

    output: str
    format: str
    samples_written: int = 0
    units_written: int = 0
    units_skipped: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples_written / self.seconds if self.seconds > 0 else 0.0


def units(cfg: SynthConfig) -> Iterator[tuple[str, range]]:
    """(unit id, sample indices) of every unit, in order."""
    per_unit = cfg.samples_per_shard
    for k, start in enumerate(range(0, cfg.num_samples, per_unit)):
        yield f"shard-{k:05d}", range(start, min(start + per_unit, cfg.num_samples))


def generate(cfg: SynthConfig) -> SynthSummary:
    """Write the benchmark described by `cfg` (format 'shards' or 'raw'); skip finished units."""
    summary = SynthSummary(output=cfg.output, format=cfg.format)
    started = time.monotonic()
    write_unit = _write_shard_unit if cfg.format == "shards" else _write_raw_unit
    with tqdm(total=cfg.num_samples, unit="sample", disable=not sys.stderr.isatty()) as progress:
        for unit_id, indices in units(cfg):
            if write_unit(cfg, unit_id, indices, progress.update):
                summary.units_written += 1
                summary.samples_written += len(indices)
            else:
                summary.units_skipped += 1
                progress.update(len(indices))
    if cfg.format == "shards":
        write_manifest(cfg.output)
    else:
        _merge_ground_truth(Path(cfg.output), [unit_id for unit_id, _ in units(cfg)])
    summary.seconds = time.monotonic() - started
    log.info("synth: wrote %d samples in %d units (%d units already done) to %s in %.1f s (%.1f samples/s)",
             summary.samples_written, summary.units_written, summary.units_skipped, cfg.output,
             summary.seconds, summary.samples_per_second)
    return summary


def _write_shard_unit(cfg: SynthConfig, unit_id: str, indices: range, advance: Any) -> bool:
    """Write one unit of shards; False when it was already done."""
    writer = UnitWriter(cfg.output, unit_id, config=cfg.dataset_config())
    if unit_done(cfg.output, unit_id):
        stats_file = layout.stats_path(Path(cfg.output), unit_id)
        _check_same_config(stats_file, UnitStats.read(stats_file).config_hash, writer.config_hash)
        return False
    with writer:
        for index in indices:
            writer.write(generate_sample(cfg, index))
            advance(1)
    return True


def _write_raw_unit(cfg: SynthConfig, unit_id: str, indices: range, advance: Any) -> bool:
    """Write one unit of raw media files and its ground-truth lines; False when it was already done."""
    root = Path(cfg.output)
    marker = root / RAW_UNITS_DIR / f"{unit_id}.jsonl"
    if marker.is_file():
        first = marker.read_text().split("\n", 1)[0]
        found = json.loads(first).get("config_hash") if first else None
        _check_same_config(marker, found, cfg.dataset_hash())
        return False
    (root / RAW_MEDIA_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for index in indices:
        sample = generate_sample(cfg, index)
        if sample.media is None or sample.media_format is None:
            raise RuntimeError(f"synth sample {sample.sample_id} was generated without its media bytes")
        relative = f"{RAW_MEDIA_DIR}/{sample.sample_id}{EXTENSIONS[sample.media_format]}"
        (root / relative).write_bytes(sample.media)
        lines.append(json.dumps(ground_truth_record(sample, relative)))
        advance(1)
    # Written last: its presence tells a rerun that every media file of the unit is complete.
    layout.atomic_write_bytes(marker, ("\n".join(lines) + "\n").encode())
    return True


def ground_truth_record(sample: Sample, file: str) -> dict[str, Any]:
    """The ground_truth.jsonl line of one sample."""
    instances = [{
        "instance_id": inst.instance_id, "phrase": inst.phrase, "caption": inst.caption,
        "frame_index": list(inst.trajectory.frame_index),
        "box": [[round(float(v), 6) for v in box] for box in inst.trajectory.box],
        "mask_rle": list(inst.trajectory.mask_rle),
    } for inst in sample.instances]
    return {"file": file, "sample_id": sample.sample_id, "media_type": sample.media_type,
            "media_format": sample.media_format, "width": sample.width, "height": sample.height,
            "fps": sample.fps, "num_frames": sample.num_frames, "split": sample.split,
            "global_caption": sample.global_caption, "config_hash": sample.config_hash,
            "instances": instances}


def _merge_ground_truth(root: Path, unit_ids: list[str]) -> None:
    parts = [(root / RAW_UNITS_DIR / f"{unit_id}.jsonl").read_bytes() for unit_id in unit_ids]
    layout.atomic_write_bytes(root / GROUND_TRUTH, b"".join(parts))


def _check_same_config(path: Path, found: str | None, expected: str | None) -> None:
    if found != expected:
        raise ConfigError(f"{path}: this unit was written with config {found}, but this run's config is "
                          f"{expected}; write to a new output folder (or remove the old one) to change "
                          "the config")


def main(cfg: SynthConfig) -> int:
    """`instvl datasets synth`: generate, then print a one-line summary."""
    summary = generate(cfg)
    print(f"{summary.output}: {summary.samples_written} samples written as {summary.format} "
          f"({summary.units_written} units, {summary.units_skipped} already done) in {summary.seconds:.1f} s "
          f"({summary.samples_per_second:.1f} samples/s)")
    return 0
