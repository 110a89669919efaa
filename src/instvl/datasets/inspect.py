"""Statistics of an InstVL dataset root (streamed, media never read) and `instvl datasets inspect`.

    stats = compute_stats("out/synth")
    print(format_stats(stats))
"""

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from instvl.config import BaseConfig
from instvl.datasets import layout
from instvl.datasets.manifest import NotADatasetError, ShardEntry, read_unit_stats
from instvl.datasets.reader import ShardReader
from instvl.datasets.report import Table, write_report
from instvl.datasets.schema import SampleRow, reason_code

log = logging.getLogger(__name__)

STATS_COLUMNS = ["media_type", "global_caption", "instances", "qc", "split", "provenance"]


class InspectConfig(BaseConfig):
    """`instvl datasets inspect ROOT`: print statistics and write a self-contained HTML report."""

    root: str
    """The dataset root."""
    html: str | None = None
    """Where to write the HTML report; default ROOT/report.html."""
    write_html: bool = True
    """Set false to only print the statistics."""
    num_samples: int = 8
    """Sample cards in the report's gallery."""
    frames_per_sample: int = 4
    """Thumbnails per card, spread over the frames that have boxes."""
    thumb_width: int = 240
    """Thumbnail width in pixels."""
    top_phrases: int = 20
    """How many of the most common phrases to list."""
    title: str | None = None
    """Report title; default 'InstVL dataset: <root name>'."""
    renders: int = 0
    """Render the first N samples as GIFs into renders/ beside the report; their cards link to them."""


@dataclass
class Summary:
    """Running count/min/mean/max of a stream of numbers."""

    count: int = 0
    total: float = 0.0
    minimum: float | None = None
    maximum: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        self.maximum = value if self.maximum is None else max(self.maximum, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def row(self, name: str) -> list[object]:
        return [name, self.count, _num(self.minimum), _num(self.mean), _num(self.maximum)]


@dataclass
class DatasetStats:
    """Everything `inspect` reports about a dataset root."""

    root: str
    samples: int = 0
    videos: int = 0
    images: int = 0
    instances: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    instances_histogram: Counter[int] = field(default_factory=Counter)
    instances_per_sample: Summary = field(default_factory=Summary)
    global_caption_words: Summary = field(default_factory=Summary)
    instance_caption_words: Summary = field(default_factory=Summary)
    trajectory_frames: Summary = field(default_factory=Summary)
    qc_status: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    phrases: Counter[str] = field(default_factory=Counter)
    shards: list[ShardEntry] = field(default_factory=list)
    models: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(provenance key, value) -> rows: which models and weights made the rows."""
    random_rows: int = 0
    """Rows made with random weights (provenance random_init=true, or a tiny-random/fake:random model)."""

    def add_row(self, row: SampleRow) -> None:
        self.samples += 1
        self.videos += row["media_type"] == "video"
        self.images += row["media_type"] == "image"
        instances = row.get("instances") or []
        self.instances += len(instances)
        self.instances_histogram[len(instances)] += 1
        self.instances_per_sample.add(len(instances))
        self.global_caption_words.add(len((row.get("global_caption") or "").split()))
        self.qc_status[(row.get("qc") or {}).get("status") or "none"] += 1
        self.splits[row.get("split") or "none"] += 1
        models = {kv["key"]: kv["value"] for kv in (row.get("provenance") or {}).get("models") or []}
        self.models.update(models.items())
        self.random_rows += is_random(models)
        for inst in instances:
            self.instance_caption_words.add(len((inst.get("caption") or "").split()))
            self.trajectory_frames.add(len((inst.get("trajectory") or {}).get("frame_index") or []))
            self.phrases[inst.get("phrase") or ""] += 1


def compute_stats(root: str | Path, batch_rows: int = 256) -> DatasetStats:
    """Stream the dataset once (no media column) and gather its statistics."""
    root = Path(root)
    stats = DatasetStats(str(root))
    for unit in read_unit_stats(root):
        stats.shards += unit.shards
        if unit.quarantine_path:
            reasons = pq.read_table(root / unit.quarantine_path, columns=["reason"]).column("reason")
            stats.quarantine_reasons.update(reason_code(r) for r in reasons.to_pylist())
    stats.quarantined = sum(stats.quarantine_reasons.values())
    for batch in ShardReader(root, columns=STATS_COLUMNS, batch_rows=batch_rows).iter_batches():
        for row in batch.to_pylist():
            stats.add_row(row)
    return stats


def is_random(models: dict[str, str]) -> bool:
    """True for a row whose provenance says random weights (older rows: a tiny-random or fake:random id)."""
    if models.get("random_init") == "true":
        return True
    return any(value.endswith("tiny-random") or value == "fake:random" for value in models.values())


def random_banner(stats: DatasetStats) -> str:
    """The warning that heads the text and HTML reports of a corpus made with random weights ('' if none)."""
    if not stats.random_rows:
        return ""
    return (f"RANDOM WEIGHTS — not a real corpus: {stats.random_rows} of {stats.samples} rows were annotated "
            "by models with random weights (provenance random_init=true); their boxes and captions are noise")


def model_lines(stats: DatasetStats) -> list[str]:
    """'detector: hf:IDEA-Research/grounding-dino-base (12 rows)', one per model id, weights, revision."""
    return [f"{key}: {value}" + (f" ({rows} of {stats.samples} rows)" if rows != stats.samples else "")
            for (key, value), rows in sorted(stats.models.items())]


def stats_tables(stats: DatasetStats, top_phrases: int = 20) -> list[Table]:
    """The statistics as titled tables, shared by the text output and the HTML report."""
    counts = [["samples", stats.samples], ["videos", stats.videos], ["images", stats.images],
              ["instances", stats.instances], ["quarantined inputs", stats.quarantined]]
    lengths = [stats.instances_per_sample.row("instances per sample"),
               stats.global_caption_words.row("global caption words"),
               stats.instance_caption_words.row("instance caption words"),
               stats.trajectory_frames.row("trajectory frames")]
    tables: list[Table] = [
        ("Counts", ["what", "count"], counts),
        ("Distributions", ["what", "n", "min", "mean", "max"], lengths),
        ("Instances per sample", ["instances", "samples"],
         [[k, v] for k, v in sorted(stats.instances_histogram.items())]),
        ("QC status", ["status", "samples"], _counted(stats.qc_status)),
        ("Splits", ["split", "samples"], _counted(stats.splits)),
        (f"Top {top_phrases} phrases", ["phrase", "instances"], _counted(stats.phrases, top_phrases)),
        ("Quarantine reasons", ["reason", "inputs"], _counted(stats.quarantine_reasons)),
        ("Shards", ["path", "rows", "bytes", "row groups"],
         [[s.path, s.rows, s.bytes, s.row_groups] for s in stats.shards]),
    ]
    return tables


def format_table(title: str, headers: list[str], rows: list[list[object]]) -> str:
    """Plain text with aligned columns (numbers right-aligned)."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    lines = [title, "-" * len(title)]
    for row in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w)
                               for c, w, num in zip(row, widths, numeric, strict=True)).rstrip())
    return "\n".join(lines if rows else [*lines[:2], "(none)"])


def format_stats(stats: DatasetStats, top_phrases: int = 20) -> str:
    """The text report: the random-weights banner (if any), the models, then the tables."""
    head = []
    if banner := random_banner(stats):
        head.append(f"!!! {banner} !!!")
    if stats.models:
        head.append("Models\n------\n" + "\n".join(model_lines(stats)))
    return "\n\n".join([*head, *(format_table(*table) for table in stats_tables(stats, top_phrases))])


def _counted(counter: Counter[Any], top: int | None = None) -> list[list[object]]:
    return [[key, count] for key, count in counter.most_common(top)]


def _num(value: float | None) -> object:
    if value is None:
        return "-"
    return int(value) if float(value).is_integer() else round(value, 2)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def main(cfg: InspectConfig) -> int:
    """Print the statistics of `cfg.root` and write the HTML report."""
    try:
        stats = compute_stats(cfg.root)
    except NotADatasetError as err:
        print(f"instvl: {err}", file=sys.stderr)
        return 1
    print(format_stats(stats, cfg.top_phrases))
    if cfg.write_html:
        report = Path(cfg.html) if cfg.html else Path(cfg.root) / layout.REPORT_FILE
        if cfg.renders > 0:
            from instvl.datasets.render import render_samples

            render_samples(cfg.root, count=cfg.renders, out_dir=report.parent / layout.RENDERS_DIR)
        path = write_report(report, cfg.root, stats_tables(stats, cfg.top_phrases), samples=stats.samples,
                            instances=stats.instances, num_samples=cfg.num_samples,
                            frames_per_sample=cfg.frames_per_sample, thumb_width=cfg.thumb_width,
                            title=cfg.title, banner=random_banner(stats), models=model_lines(stats))
        print(f"\nreport: {path}")
    return 0
