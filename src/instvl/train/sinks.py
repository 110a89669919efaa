"""Where training metrics go: a JSONL file always, TensorBoard when installed, and a curve image at the end.

Sinks run on rank 0 only. Each record is a flat dict with an integer `step`; a resumed run first drops
the records past the step it resumes from, so the file holds one clean curve.
"""

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from instvl.deps import is_available

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per record to `path`."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in read_jsonl(self.path) if line.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None:
            self.path.write_text("")
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the run's lifetime

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Scalars to a TensorBoard event folder."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key.replace(".", "/"), value, step)

    def close(self) -> None:
        self.writer.close()


class MultiSink:
    """Fans records out to several sinks."""

    def __init__(self, sinks: Sequence[MetricsSink]):
        self.sinks = list(sinks)

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class NullSink:
    """For ranks other than 0."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def default_sinks(output_dir: str | Path, resume_step: int | None = None,
                  tensorboard: bool = True) -> MultiSink:
    """JSONL at OUTPUT/metrics.jsonl, plus TensorBoard at OUTPUT/tensorboard when the package is installed."""
    output_dir = Path(output_dir)
    sinks: list[MetricsSink] = [JsonlSink(output_dir / "metrics.jsonl", resume_step)]
    if tensorboard and is_available("tensorboard"):
        sinks.append(TensorBoardSink(output_dir / "tensorboard", resume_step))
    elif tensorboard:
        log.info("tensorboard is not installed; metrics go to metrics.jsonl only")
    return MultiSink(sinks)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file; a torn last line (a killed run) is ignored."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable metrics line skipped", path, number)
    return records


def plot_curves(records: list[dict[str, Any]], path: str | Path,
                keys: Sequence[str] = ("loss", "l_rec", "l_glob", "l_inst", "lr")) -> Path | None:
    """A PNG with one panel per metric against step: matplotlib when installed, else drawn with PIL."""
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), int | float)] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    path = Path(path)
    if is_available("matplotlib"):
        _plot_matplotlib(series, path)
    else:
        _plot_pil(series, path)
    return path


def _plot_matplotlib(series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2 * len(series)), sharex=True, squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], series.items(), strict=True):
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_ylabel(key)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_pil(series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    from PIL import Image, ImageDraw

    width, panel, margin = 640, 160, 40
    image = Image.new("RGB", (width, panel * len(series)), "white")
    draw = ImageDraw.Draw(image)
    for row, (key, points) in enumerate(series.items()):
        top = row * panel
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x_span, y_lo, y_span = max(max(xs) - min(xs), 1), min(ys), max(max(ys) - min(ys), 1e-12)
        coords = [(margin + (x - min(xs)) / x_span * (width - 2 * margin),
                   top + panel - margin / 2 - (y - y_lo) / y_span * (panel - margin)) for x, y in points]
        draw.rectangle([margin, top + margin / 2, width - margin, top + panel - margin / 2], outline="grey")
        draw.line(coords if len(coords) > 1 else coords * 2, fill="navy", width=2)
        label = f"{key}: {ys[-1]:.4g} (min {min(ys):.4g}, max {max(ys):.4g})"
        draw.text((margin, top + 4), label, fill="black")
    image.save(path)
