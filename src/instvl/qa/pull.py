"""`instvl qa pull ROOT OUT`: merge reviewed Label Studio tasks into a new dataset version at OUT.

Reviewed tasks are exported with interpolated key frames, converted back to trajectories and captions
and merged into the rows of ROOT, unit by unit with the same unit ids. A review is merged only into the
row its task was pushed as: same dataset id (the lineage in ROOT's push state), same sample id and same
prediction fingerprint; a task whose prediction is not the row is reported and left alone. A reviewed
row's qc status is `rejected` (the reviewer chose reject), `corrected` (a box moved by more than
`pull.box_tolerance`, a track or caption changed, an instance was added or removed) or `accepted`; a
submit without an accept/reject verdict is not a review. Rows reviewed in an earlier pull (ROOT is itself
a pulled version) are copied as they are, and ROOT's review log is carried into OUT's, so a second pull
only adds reviews made since. Unreviewed rows are copied unchanged; rejected rows are kept (training
readers leave them out). OUT/qa/reviews.jsonl records the prediction and the reviewed version of every
reviewed sample for `instvl qa report`.
"""

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from instvl.datasets import layout
from instvl.datasets.layout import atomic_write_bytes
from instvl.datasets.manifest import UnitStats, read_unit_stats, unit_done, write_manifest
from instvl.datasets.reader import ShardReader
from instvl.datasets.schema import QCRow, SampleRow
from instvl.datasets.writer import UnitWriter
from instvl.qa.client import LabelStudioClient, LabelStudioError
from instvl.qa.convert import prediction_fingerprint, review_fps
from instvl.qa.merge import Review, merge_review, review_from_task
from instvl.qa.projects import project_title
from instvl.qa.push import load_push_state, task_key
from instvl.qa.settings import QAConfig

log = logging.getLogger(__name__)


class PullConfig(QAConfig):
    """`instvl qa pull ROOT OUT`: merge reviewed tasks of ROOT's samples into a new version at OUT."""

    root: str
    """The dataset root that was pushed."""
    output: str
    """Where the new dataset version is written (same unit ids as ROOT)."""


@dataclass
class PullSummary:
    rows: int = 0
    reviewed: int = 0
    """Reviews merged by this pull."""
    statuses: dict[str, int] | None = None
    kept: int = 0
    """Rows already reviewed in ROOT, copied as they are."""
    mismatched: list[str] = field(default_factory=list)
    """Samples with a review of this dataset whose task prediction is not the row (not merged)."""
    no_verdict: list[str] = field(default_factory=list)
    """Samples whose latest submit has no accept/reject verdict (not merged)."""
    changed_since: list[str] = field(default_factory=list)
    """Reviewed rows whose task was re-reviewed after ROOT was pulled (pull from the pushed version)."""


@dataclass
class Reviews:
    """The submitted reviews of a pull, by task key and by task id."""

    dataset_id: str
    by_key: dict[tuple[str, str], Review] = field(default_factory=dict)
    by_task: dict[int, Review] = field(default_factory=dict)
    fingerprints: dict[str, set[str]] = field(default_factory=dict)
    """sample id -> fingerprints of this dataset's reviewed tasks."""

    def add(self, review: Review) -> None:
        self.by_task[review.task_id] = review
        if review.dataset_id != self.dataset_id or not review.fingerprint:
            return  # another dataset's task (same clips): never merged here
        key = (review.sample_id, review.fingerprint)
        if key not in self.by_key or _later(review, self.by_key[key]):
            self.by_key[key] = review
        self.fingerprints.setdefault(review.sample_id, set()).add(review.fingerprint)


def _later(a: Review, b: Review) -> bool:
    epoch = datetime.min.replace(tzinfo=UTC)
    return (a.reviewed_at or epoch, a.task_id) > (b.reviewed_at or epoch, b.task_id)


def project_keys(root: Path, cfg: PullConfig) -> set[str]:
    """Titles of the projects the samples of ROOT were (or would be) pushed to."""
    titles = set()
    for row in ShardReader(root, columns=["media_type", "fps"]).iter_rows():
        fps = review_fps(row) if row["media_type"] == "video" else None
        titles.add(project_title(cfg.server, row["media_type"], fps))
    return titles


def fetch_reviews(client: LabelStudioClient, titles: set[str], wanted: set[str], dataset_id: str) -> Reviews:
    """The latest submitted review of every task of ROOT's samples, from the projects' exports."""
    reviewers = client.users()
    reviews = Reviews(dataset_id)
    for title in sorted(titles):
        project = client.find_project(title)
        if project is None:
            log.info("no Label Studio project %r: nothing to pull from it", title)
            continue
        for task in client.export(project["id"], interpolate=True):
            review = review_from_task(task, reviewers)
            if review is not None and review.sample_id in wanted:
                reviews.add(review)
    return reviews


def check_output(root: Path, out: Path, units: list[str], overwrite: bool) -> None:
    if out.resolve() == root.resolve():
        raise ValueError(f"{out}: the output must be a new folder, not the dataset root being pulled")
    done = [u for u in units if unit_done(out, u)]
    if done and not overwrite:
        raise FileExistsError(f"{out}: unit(s) {', '.join(done)} already written (set pull.overwrite=true)")


def _utc(stamp: Any) -> datetime | None:
    if not isinstance(stamp, datetime):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def review_of(row: SampleRow, reviews: Reviews, summary: PullSummary) -> tuple[Review | None, str]:
    """The review to merge into `row` (None: copy the row) and the fingerprint of its prediction."""
    qc: QCRow = row.get("qc") or {}
    sample_id = row["sample_id"]
    if (qc.get("status") or "auto") != "auto":  # reviewed in an earlier pull: keep it as merged then
        summary.kept += 1
        task_id = qc.get("task_id")
        later = reviews.by_task.get(int(task_id)) if task_id is not None else None
        merged_at, reviewed_at = _utc(qc.get("reviewed_at")), later and later.reviewed_at
        if later and merged_at and reviewed_at and reviewed_at > merged_at:
            log.warning("sample %s: task %s was reviewed again after this version was pulled; pull from "
                        "the version that was pushed to merge it", sample_id, later.task_id)
            summary.changed_since.append(sample_id)
        return None, ""
    fingerprint = prediction_fingerprint(row)
    review = reviews.by_key.get((sample_id, fingerprint))
    if review is None:
        if reviews.fingerprints.get(sample_id):
            log.warning("sample %s: its reviewed task was pushed with another prediction than this row; "
                        "not merged", sample_id)
            summary.mismatched.append(sample_id)
        return None, fingerprint
    if review.verdict not in ("accept", "reject"):
        log.warning("sample %s: task %s was submitted without accept/reject; left for review",
                    sample_id, review.task_id)
        summary.no_verdict.append(sample_id)
        return None, fingerprint
    return review, fingerprint


def merge_unit(root: Path, out: Path, stats: UnitStats, reviews: Reviews, ctx: dict) -> list:
    """Copy one unit to OUT, merging the reviewed rows; returns the new review log entries."""
    shards = [root / shard.path for shard in stats.shards]
    entries = []
    with UnitWriter(out, stats.unit_id, config=ctx["config"], overwrite=ctx["overwrite"],
                    sources=stats.sources) as writer:
        for row in ShardReader(shards=shards).iter_rows():
            review, fingerprint = review_of(row, reviews, ctx["summary"])
            if review is None:
                writer.write(row)
                continue
            reasons = ctx["reasons"].get(task_key(row["sample_id"], fingerprint), {}).get("route_reasons")
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
    state = load_push_state(root, client.url)
    reviews = fetch_reviews(client, project_keys(root, cfg), wanted, state.dataset_id)
    summary = PullSummary(rows=len(wanted))
    ctx = {"config": {"qa_pull": {"source": str(root.resolve()), "server": client.url,
                                  "box_tolerance": cfg.pull.box_tolerance}},
           "overwrite": cfg.pull.overwrite, "tolerance": cfg.pull.box_tolerance,
           "reasons": state.tasks, "summary": summary}
    entries = [e for stats in units for e in merge_unit(root, out, stats, reviews, ctx)]
    write_manifest(out)
    history = (root / layout.REVIEWS_FILE).read_text() if (root / layout.REVIEWS_FILE).is_file() else ""
    atomic_write_bytes(out / layout.REVIEWS_FILE,
                       (history + "".join(json.dumps(e, default=str) + "\n" for e in entries)).encode())
    if (root / layout.PUSH_STATE_FILE).is_file():
        shutil.copyfile(root / layout.PUSH_STATE_FILE, out / layout.PUSH_STATE_FILE)
    statuses: dict[str, int] = {}
    for entry in entries:
        statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
    summary.reviewed, summary.statuses = len(entries), statuses
    return summary


def main(cfg: PullConfig) -> int:
    try:
        summary = pull_dataset(cfg)
    except (LabelStudioError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"instvl qa pull: {err}", file=sys.stderr)
        return 1
    counts = "  ".join(f"{k} {v}" for k, v in sorted((summary.statuses or {}).items()))
    print(f"rows {summary.rows}  reviewed {summary.reviewed}  {counts}  kept {summary.kept}  -> {cfg.output}")
    for what, samples in (("prediction differs from the row", summary.mismatched),
                          ("no accept/reject verdict", summary.no_verdict),
                          ("reviewed again since", summary.changed_since)):
        if samples:
            print(f"  not merged ({what}): {', '.join(samples)}")
    return 0
