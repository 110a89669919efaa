"""`instvl qa pull ROOT OUT`: merge reviewed Label Studio tasks into a new dataset version at OUT.

Reviewed tasks are exported with interpolated key frames, converted back to trajectories and captions
and merged into the rows of ROOT, unit by unit with the same unit ids. A reviewed row's qc status is
`rejected` (the reviewer chose reject), `corrected` (a box moved by more than `pull.box_tolerance`, a
track or caption changed, an instance was added or removed) or `accepted`; unreviewed rows are copied
unchanged. Rejected rows are kept: training readers leave them out. OUT/qa/reviews.jsonl records the
prediction and the reviewed version of every reviewed sample for `instvl qa report`.
"""

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from instvl.datasets import layout
from instvl.datasets.layout import atomic_write_bytes
from instvl.datasets.manifest import UnitStats, read_unit_stats, unit_done, write_manifest
from instvl.datasets.reader import ShardReader
from instvl.datasets.writer import UnitWriter
from instvl.qa.client import LabelStudioClient, LabelStudioError
from instvl.qa.merge import Review, merge_review, review_from_task
from instvl.qa.projects import project_title
from instvl.qa.push import load_push_state
from instvl.qa.settings import QASettings

log = logging.getLogger(__name__)


class PullConfig(QASettings):
    """`instvl qa pull ROOT OUT`: merge reviewed tasks of ROOT's samples into a new version at OUT."""

    root: str
    """The dataset root that was pushed."""
    output: str
    """Where the new dataset version is written (same unit ids as ROOT)."""


@dataclass
class PullSummary:
    rows: int = 0
    reviewed: int = 0
    statuses: dict[str, int] | None = None


def project_keys(root: Path, cfg: PullConfig) -> set[str]:
    """Titles of the projects the samples of ROOT were (or would be) pushed to."""
    titles = set()
    for row in ShardReader(root, columns=["media_type", "fps"]).iter_rows():
        fps = float(row["fps"]) if row["media_type"] == "video" else None
        titles.add(project_title(cfg.server, row["media_type"], fps))
    return titles


def fetch_reviews(client: LabelStudioClient, titles: set[str], wanted: set[str]) -> dict[str, Review]:
    """sample_id -> latest submitted review, from the interpolated exports of the projects."""
    reviewers = client.users()
    reviews: dict[str, Review] = {}
    for title in sorted(titles):
        project = client.find_project(title)
        if project is None:
            log.info("no Label Studio project %r: nothing to pull from it", title)
            continue
        for task in client.export(project["id"], interpolate=True):
            review = review_from_task(task, reviewers)
            if review is not None and review.sample_id in wanted:
                reviews[review.sample_id] = review
    return reviews


def check_output(root: Path, out: Path, units: list[str], overwrite: bool) -> None:
    if out.resolve() == root.resolve():
        raise ValueError(f"{out}: the output must be a new folder, not the dataset root being pulled")
    done = [u for u in units if unit_done(out, u)]
    if done and not overwrite:
        raise FileExistsError(f"{out}: unit(s) {', '.join(done)} already written (set pull.overwrite=true)")


def merge_unit(root: Path, out: Path, stats: UnitStats, reviews: dict[str, Review], ctx: dict) -> list:
    """Copy one unit to OUT, merging the reviewed rows; returns the review log entries."""
    shards = [root / shard.path for shard in stats.shards]
    entries = []
    with UnitWriter(out, stats.unit_id, config=ctx["config"], overwrite=ctx["overwrite"],
                    sources=stats.sources) as writer:
        for row in ShardReader(shards=shards).iter_rows():
            review = reviews.get(row["sample_id"])
            if review is None:
                writer.write(row)
                continue
            reasons = ctx["reasons"].get(row["sample_id"], {}).get("route_reasons")
            merged, entry = merge_review(row, review, ctx["tolerance"], reasons)
            writer.write(merged)
            entries.append(entry)
    return entries


def pull_dataset(cfg: PullConfig, client: LabelStudioClient | None = None) -> PullSummary:
    """Merge the reviews of `cfg.root`'s samples into a new version at `cfg.output`."""
    root, out = Path(cfg.root), Path(cfg.output)
    units = read_unit_stats(root)
    if not units:
        raise FileNotFoundError(f"{root}: not a dataset root (no finished units)")
    check_output(root, out, [u.unit_id for u in units], cfg.pull.overwrite)
    client = client or cfg.server.build()
    wanted = {r["sample_id"] for r in ShardReader(root, columns=["sample_id"]).iter_rows()}
    reviews = fetch_reviews(client, project_keys(root, cfg), wanted)
    ctx = {"config": {"qa_pull": {"source": str(root.resolve()), "server": client.url,
                                  "box_tolerance": cfg.pull.box_tolerance}},
           "overwrite": cfg.pull.overwrite, "tolerance": cfg.pull.box_tolerance,
           "reasons": load_push_state(root, client.url).tasks}
    entries = [e for stats in units for e in merge_unit(root, out, stats, reviews, ctx)]
    write_manifest(out)
    atomic_write_bytes(out / layout.REVIEWS_FILE,
                       "".join(json.dumps(e, default=str) + "\n" for e in entries).encode())
    if (root / layout.PUSH_STATE_FILE).is_file():
        shutil.copyfile(root / layout.PUSH_STATE_FILE, out / layout.PUSH_STATE_FILE)
    statuses: dict[str, int] = {}
    for entry in entries:
        statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
    return PullSummary(rows=len(wanted), reviewed=len(entries), statuses=statuses)


def main(cfg: PullConfig) -> int:
    try:
        summary = pull_dataset(cfg)
    except (LabelStudioError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"instvl qa pull: {err}", file=sys.stderr)
        return 1
    counts = "  ".join(f"{k} {v}" for k, v in sorted((summary.statuses or {}).items()))
    print(f"rows {summary.rows}  reviewed {summary.reviewed}  {counts}  -> {cfg.output}")
    return 0
