"""`instvl qa report ROOT`: how reviewers judged a pulled dataset version.

Rates come from the rows' qc status (accepted, corrected, rejected among reviewed rows); box IoU
between prediction and correction and caption edit distance come from ROOT/qa/reviews.jsonl, which
`instvl qa pull` writes. Everything is broken down per backend (provenance models), per phrase (each
instance with its own verdict) and per reviewer. The random audit share (samples the routing drew with
the `audit` reason, whatever else flagged them) is the unbiased estimate of the error rate of unreviewed
data, given with a 95 % Wilson interval; the routed samples (any other reason) are reported apart, and
per reason the `error` column is that reason's precision: the share of its reviewed samples that
reviewers corrected or rejected. Prints a table and writes an HTML page.
"""

import html
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from instvl.config import BaseConfig
from instvl.datasets.layout import QA_REPORT_FILE, REVIEWS_FILE, atomic_write_bytes
from instvl.datasets.reader import ShardReader
from instvl.geometry import box_iou, boxes_at
from instvl.qa.routing import reason_code

REVIEWED = ("accepted", "corrected", "rejected")
ERRORS = ("corrected", "rejected")
Z95 = 1.959964


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
    """Mean IoU over the keyframes of either track, each track read there by linear interpolation
    between its keyframes (as a reviewer sees it); a frame outside one track's span counts 0."""
    frames = sorted(set(frames_a or []) | set(frames_b or []))
    if not frames:
        return 1.0
    a, in_a = boxes_at(frames_a or [], boxes_a or [], frames, mode="interpolate")
    b, in_b = boxes_at(frames_b or [], boxes_b or [], frames, mode="interpolate")
    ious = [float(box_iou(a[k], b[k])[0, 0]) if in_a[k] and in_b[k] else 0.0 for k in range(len(frames))]
    return sum(ious) / len(ious)


def wilson(errors: int, n: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion errors/n (None when n is 0)."""
    if not n:
        return None
    p, z2 = errors / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Tally:
    """Counts and sums of one group (all, a phrase, a backend)."""

    def __init__(self) -> None:
        self.status: dict[str, int] = defaultdict(int)
        self.ious: list[float] = []
        self.edits: list[int] = []

    def row(self, name: str) -> dict[str, Any]:
        reviewed = sum(self.status[s] for s in REVIEWED)
        rates = {s: self.status[s] / reviewed if reviewed else None for s in REVIEWED}
        errors = sum(self.status[s] for s in ERRORS)
        return {"group": name, "rows": sum(self.status.values()), "reviewed": reviewed, **rates,
                "error": errors / reviewed if reviewed else None, "error_ci95": wilson(errors, reviewed),
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
        for group in sample_groups(entry):
            tallies[group].status[entry["status"]] += 1
        groups = ["all"] + [f"backend {k}={v}" for k, v in sorted(entry["models"].items())]
        for inst in entry["instances"]:
            phrase = f"phrase {inst['phrase']}"
            # Each instance counts with its own verdict (an older log has only the sample's).
            tallies[phrase].status[inst.get("status") or entry["status"]] += 1
            if entry["status"] == "rejected":
                continue  # a rejected sample was judged, not corrected: no prediction/correction pair
            iou = track_iou(inst["frames_before"], inst["boxes_before"],
                            inst["frames_after"], inst["boxes_after"])
            edit = levenshtein(inst["caption_before"] or "", inst["caption_after"] or "")
            for group in groups + [phrase]:
                tallies[group].ious.append(iou)
                tallies[group].edits.append(edit)


def sample_groups(entry: dict[str, Any]) -> list[str]:
    """The review-only groups a reviewed sample counts in: audit or routed, each reason, its reviewer."""
    codes = sorted({reason_code(r) for r in entry.get("route_reasons") or []})
    groups = [f"reason {code}" for code in codes] + [f"reviewer {entry.get('reviewer') or '-'}"]
    if "audit" in codes:
        groups.append("audit (random share)")
    if set(codes) - {"audit"}:
        groups.append("routed")
    return groups


GROUP_ORDER = ("all", "audit", "routed", "reason", "reviewer", "backend", "phrase")


def qc_report(root: str | Path) -> list[dict[str, Any]]:
    """One summary row for the whole dataset, then the audit share, the routed samples, per routing
    reason, per reviewer, per backend and per phrase (instance counts)."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    tallies["all"] = Tally()
    tally_rows(Path(root), tallies)
    tally_reviews(Path(root), tallies)
    order = {prefix: k for k, prefix in enumerate(GROUP_ORDER)}
    names = sorted(tallies, key=lambda name: (order.get(name.split(" ")[0], len(order)), name))
    return [tallies[name].row(name) for name in names]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:.3f}" for v in value) + "]"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


COLUMNS = ("group", "rows", "reviewed", "accepted", "corrected", "rejected", "error", "error_ci95",
           "box_iou", "caption_edits")


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
            f"<p>Rates are shares of reviewed rows (per phrase: of reviewed instances, each with its own "
            f"verdict); error = corrected + rejected, with its 95 % Wilson interval. The <b>audit</b> row "
            f"is the random share: its error is the unbiased estimate for unreviewed data. Per "
            f"<b>reason</b>, error is the reason's precision. Box IoU and caption edit distance compare "
            f"prediction and review.</p>"
            f"<table><tr>{head}</tr>{body}</table>")


def main(cfg: ReportConfig) -> int:
    rows = qc_report(cfg.root)
    print(format_table(rows))
    target = Path(cfg.html) if cfg.html else Path(cfg.root) / QA_REPORT_FILE
    atomic_write_bytes(target, format_html(rows, cfg.root).encode())
    print(f"HTML report: {target}")
    return 0
