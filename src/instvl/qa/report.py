"""`instvl qa report ROOT`: how reviewers judged a pulled dataset version.

Rates come from the rows' qc status (accepted, corrected, rejected among reviewed rows); box IoU
between prediction and correction and caption edit distance come from ROOT/qa/reviews.jsonl, which
`instvl qa pull` writes. Everything is broken down per phrase and per backend (provenance models).
Prints a table and writes an HTML page.
"""

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from instvl.config import BaseConfig
from instvl.datasets.layout import QA_REPORT_FILE, REVIEWS_FILE, atomic_write_bytes
from instvl.datasets.reader import ShardReader
from instvl.geometry import box_iou

REVIEWED = ("accepted", "corrected", "rejected")


class ReportConfig(BaseConfig):
    """`instvl qa report ROOT`: acceptance and correction statistics of a reviewed dataset."""

    root: str
    """A dataset version written by `instvl qa pull`."""
    html: str | None = None
    """Where to write the HTML report (default ROOT/qa/report.html)."""


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def track_iou(frames_a: list[int] | None, boxes_a: list | None, frames_b: list[int] | None,
              boxes_b: list | None) -> float:
    """Mean IoU over the frames either track covers (a frame only one covers counts 0)."""
    a = dict(zip(frames_a or [], boxes_a or [], strict=True))
    b = dict(zip(frames_b or [], boxes_b or [], strict=True))
    frames = set(a) | set(b)
    if not frames:
        return 1.0
    return sum(float(box_iou(a[f], b[f])[0, 0]) if f in a and f in b else 0.0 for f in frames) / len(frames)


class Tally:
    """Counts and sums of one group (all, a phrase, a backend)."""

    def __init__(self) -> None:
        self.status: dict[str, int] = defaultdict(int)
        self.ious: list[float] = []
        self.edits: list[int] = []

    def row(self, name: str) -> dict[str, Any]:
        reviewed = sum(self.status[s] for s in REVIEWED)
        rates = {s: self.status[s] / reviewed if reviewed else None for s in REVIEWED}
        return {"group": name, "rows": sum(self.status.values()), "reviewed": reviewed, **rates,
                "box_iou": sum(self.ious) / len(self.ious) if self.ious else None,
                "caption_edits": sum(self.edits) / len(self.edits) if self.edits else None}


def tally_rows(root: Path, tallies: dict[str, Tally]) -> None:
    for row in ShardReader(root, columns=["qc", "provenance"]).iter_rows():
        status = (row.get("qc") or {}).get("status") or "auto"
        tallies["all"].status[status] += 1
        for kv in (row.get("provenance") or {}).get("models") or []:
            tallies[f"backend {kv['key']}={kv['value']}"].status[status] += 1


def tally_reviews(root: Path, tallies: dict[str, Tally]) -> None:
    path = root / REVIEWS_FILE
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["status"] == "rejected":
            continue  # a rejected sample was judged, not corrected: no prediction/correction pair
        groups = ["all"] + [f"backend {k}={v}" for k, v in sorted(entry["models"].items())]
        for inst in entry["instances"]:
            iou = track_iou(inst["frames_before"], inst["boxes_before"],
                            inst["frames_after"], inst["boxes_after"])
            edit = levenshtein(inst["caption_before"] or "", inst["caption_after"] or "")
            phrase = f"phrase {inst['phrase']}"
            tallies[phrase].status[entry["status"]] += 1
            for group in groups + [phrase]:
                tallies[group].ious.append(iou)
                tallies[group].edits.append(edit)


def qc_report(root: str | Path) -> list[dict[str, Any]]:
    """One summary row for the whole dataset, then per backend and per phrase (instance counts)."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    tallies["all"] = Tally()
    tally_rows(Path(root), tallies)
    tally_reviews(Path(root), tallies)
    return [tallies[name].row(name) for name in ["all"] + sorted(k for k in tallies if k != "all")]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


COLUMNS = ("group", "rows", "reviewed", "accepted", "corrected", "rejected", "box_iou", "caption_edits")


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [[_fmt(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells)


def format_html(rows: list[dict[str, Any]], root: str | Path) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    cells = ("".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in COLUMNS) for r in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return (f"<!doctype html><meta charset='utf-8'><title>instvl QC report</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:right}}</style>"
            f"<h1>QC report of {html.escape(str(root))}</h1>"
            f"<p>Rates are shares of reviewed rows (per phrase: of reviewed instances); box IoU and "
            f"caption edit distance compare prediction and review.</p>"
            f"<table><tr>{head}</tr>{body}</table>")


def main(cfg: ReportConfig) -> int:
    rows = qc_report(cfg.root)
    print(format_table(rows))
    target = Path(cfg.html) if cfg.html else Path(cfg.root) / QA_REPORT_FILE
    atomic_write_bytes(target, format_html(rows, cfg.root).encode())
    print(f"HTML report: {target}")
    return 0
