"""One reviewed task merged into its row: verdict, corrected tracks and captions, qc fields.

Tracks the reviewer left alone (every box within the tolerance, same frames) keep their original
values, scores and masks bit for bit. In a changed track, frames whose box stayed within the tolerance
keep their box, score and mask; moved or added frames get the reviewed box, score 1 and no mask (a mask
no longer matches a moved box). Regions the reviewer drew become new instances. Each instance's own
status (accepted, corrected, added, removed) goes into the review log next to the sample's.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from instvl.datasets.records import Instance, Trajectory
from instvl.datasets.schema import InstanceRow, ProvenanceRow, QCRow, SampleRow, TrajectoryRow
from instvl.qa.convert import Region, instance_id_of, parse_result


@dataclass
class Review:
    """The latest submitted annotation of one task."""

    sample_id: str
    task_id: int
    result: list[dict[str, Any]]
    reviewer: str | None
    reviewed_at: datetime | None
    dataset_id: str | None = None
    """The dataset (lineage) the task was pushed from (`data.dataset_id`)."""
    fingerprint: str | None = None
    """`convert.prediction_fingerprint` of the row the task was pushed as (`data.fingerprint`)."""

    @property
    def verdict(self) -> str | None:
        """'accept', 'reject', or None when the reviewer submitted without choosing."""
        return parse_result(self.result, 1).verdict


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _reviewer(completed_by: Any, reviewers: dict[int, str]) -> str | None:
    if isinstance(completed_by, dict):
        return completed_by.get("email") or reviewers.get(int(completed_by.get("id", -1)))
    return reviewers.get(int(completed_by), str(completed_by)) if completed_by is not None else None


def review_from_task(task: dict[str, Any], reviewers: dict[int, str]) -> Review | None:
    """The newest non-cancelled annotation of an exported task, or None when nobody submitted one."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    sample_id = (task.get("data") or {}).get("sample_id")
    if not submitted or sample_id is None:
        return None
    latest = max(submitted, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id", 0)))
    data = task.get("data") or {}
    return Review(sample_id=str(sample_id), task_id=int(task["id"]), result=latest.get("result") or [],
                  reviewer=_reviewer(latest.get("completed_by"), reviewers),
                  reviewed_at=_timestamp(latest.get("updated_at") or latest.get("created_at")),
                  dataset_id=data.get("dataset_id"), fingerprint=data.get("fingerprint"))


def same_track(old: TrajectoryRow, reviewed: Trajectory, tolerance: float) -> bool:
    """Same frames and every coordinate within `tolerance`."""
    if list(old.get("frame_index") or []) != reviewed.frame_index:
        return False
    pairs = zip(old.get("box") or [], reviewed.box, strict=True)
    return all(abs(a - b) <= tolerance for before, after in pairs for a, b in zip(before, after, strict=True))


def corrected_track(old: TrajectoryRow, reviewed: Trajectory, tolerance: float) -> TrajectoryRow:
    """The reviewed track, with the original box, score and mask on every frame the reviewer left alone."""
    before = {int(f): k for k, f in enumerate(old.get("frame_index") or [])}
    boxes, scores, masks = old.get("box") or [], old.get("score") or [], old.get("mask_rle") or []
    track = reviewed.to_row()
    kept_any_mask = False
    track["mask_rle"] = [""] * len(reviewed.frame_index)
    for k, frame in enumerate(reviewed.frame_index):
        j = before.get(frame)
        if j is None or any(abs(a - b) > tolerance for a, b in zip(boxes[j], reviewed.box[k], strict=True)):
            continue
        track["box"][k] = list(boxes[j])
        if j < len(scores):
            track["score"][k] = scores[j]
        if j < len(masks) and masks[j]:
            track["mask_rle"][k], kept_any_mask = masks[j], True
    if not kept_any_mask:
        track["mask_rle"] = []
    return track


def merged_instance(old: InstanceRow | None, region: Region, reviewed: Trajectory, new_id: int,
                    tolerance: float) -> tuple[InstanceRow, bool]:
    """The instance after review of `region` (whose trajectory is `reviewed`) and whether it differs from
    `old` (None for a reviewer-drawn region)."""
    if old is None:
        drawn = Instance(new_id, region.phrase or "", region.caption or "", reviewed, score=1.0)
        return drawn.to_row(), True
    unchanged = same_track(old["trajectory"], reviewed, tolerance)
    new: InstanceRow = {**old, "phrase": region.phrase or old["phrase"],
                        "caption": region.caption if region.caption is not None else old["caption"],
                        "trajectory": (old["trajectory"] if unchanged
                                       else corrected_track(old["trajectory"], reviewed, tolerance))}
    changed = not unchanged or new["phrase"] != old["phrase"] or new["caption"] != old["caption"]
    return new, changed


def reviewed_instances(row: SampleRow, regions: dict[str, Region],
                       tolerance: float) -> tuple[list[InstanceRow], bool]:
    """The instances after review and whether any was changed, added or removed."""
    old_by_id = {inst["instance_id"]: inst for inst in row.get("instances") or []}
    next_id = max(old_by_id, default=-1) + 1
    instances: list[InstanceRow] = []
    changed, kept = False, set()
    for region_key, region in regions.items():
        if region.trajectory is None or not region.trajectory.frame_index:
            continue  # a caption without a box: nothing to ground
        instance_id = instance_id_of(region_key)
        old = old_by_id.get(instance_id) if instance_id is not None else None
        if old is None or instance_id is None:
            instance_id, next_id = next_id, next_id + 1
        inst, differs = merged_instance(old, region, region.trajectory, instance_id, tolerance)
        instances.append(inst)
        kept.add(instance_id)
        changed |= differs
    changed |= bool(set(old_by_id) - kept)
    return sorted(instances, key=lambda i: i["instance_id"]), changed


def instance_status(old: InstanceRow | None, new: InstanceRow | None, sample_status: str) -> str:
    """One instance's verdict: the sample's when it was rejected, else how this instance came out."""
    if sample_status == "rejected":
        return "rejected"
    if old is None:
        return "added"
    if new is None:
        return "removed"
    same = (new["trajectory"] == old["trajectory"] and new["phrase"] == old["phrase"]
            and new["caption"] == old["caption"])
    return "accepted" if same else "corrected"


def log_entry(row: SampleRow, merged: SampleRow, status: str) -> dict[str, Any]:
    """Prediction and reviewed version of one sample, for the QC report."""
    before = {i["instance_id"]: i for i in row.get("instances") or []}
    after = {i["instance_id"]: i for i in merged.get("instances") or []}
    instances = []
    for instance_id in sorted(set(before) | set(after)):
        old, new = before.get(instance_id), after.get(instance_id)
        instances.append({
            "instance_id": instance_id, "phrase": (new or old or {}).get("phrase"),
            "status": instance_status(old, new, status),
            "caption_before": old and old["caption"], "caption_after": new and new["caption"],
            "frames_before": old and old["trajectory"]["frame_index"],
            "boxes_before": old and old["trajectory"]["box"],
            "frames_after": new and new["trajectory"]["frame_index"],
            "boxes_after": new and new["trajectory"]["box"]})
    prov: ProvenanceRow = row.get("provenance") or {}
    qc: QCRow = merged["qc"]
    return {"sample_id": row["sample_id"], "media_type": row["media_type"], "status": status,
            "task_id": qc.get("task_id"), "reviewer": qc.get("reviewer"),
            "reviewed_at": qc.get("reviewed_at"), "route_reasons": list(qc.get("route_reasons") or []),
            "models": {kv["key"]: kv["value"] for kv in prov.get("models") or []},
            "global_caption_before": row.get("global_caption"),
            "global_caption_after": merged["global_caption"],
            "instances": instances}


def merge_review(row: SampleRow, review: Review, tolerance: float,
                 route_reasons: list[str] | None = None) -> tuple[SampleRow, dict[str, Any]]:
    """The row after review (new dict) and its review log entry; ValueError for a review without verdict."""
    parsed = parse_result(review.result, int(row.get("num_frames") or 1))
    if parsed.verdict not in ("accept", "reject"):
        raise ValueError(f"task {review.task_id} of sample {review.sample_id} has no accept/reject verdict")
    if route_reasons is None:
        stored: QCRow = row.get("qc") or {}
        route_reasons = stored.get("route_reasons") or []
    if parsed.verdict == "reject":
        merged: SampleRow = {**row, "qc": reviewed_qc(review, "rejected", route_reasons)}
        return merged, log_entry(row, merged, "rejected")
    instances, changed = reviewed_instances(row, parsed.regions, tolerance)
    caption = parsed.global_caption or row.get("global_caption")
    changed |= caption != row.get("global_caption")
    status = "corrected" if changed else "accepted"
    merged = {**row, "instances": instances, "global_caption": caption or "",
              "qc": reviewed_qc(review, status, route_reasons)}
    return merged, log_entry(row, merged, status)


def reviewed_qc(review: Review, status: str, route_reasons: list[str]) -> QCRow:
    return {"status": status, "reviewer": review.reviewer, "reviewed_at": review.reviewed_at,
            "task_id": review.task_id, "route_reasons": list(route_reasons)}
