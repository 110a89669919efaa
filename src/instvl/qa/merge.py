"""One reviewed task merged into its row: verdict, corrected tracks and captions, qc fields.

Tracks the reviewer left alone (every box within the tolerance, same frames) keep their original
values, scores and masks bit for bit; changed tracks get the reviewed boxes, score 1 and no masks
(a mask no longer matches a moved box). Regions the reviewer drew become new instances.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from instvl.qa.convert import instance_id_of, parse_result


@dataclass
class Review:
    """The latest submitted annotation of one task."""

    sample_id: str
    task_id: int
    result: list[dict[str, Any]]
    reviewer: str | None
    reviewed_at: datetime | None


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
    return Review(sample_id=str(sample_id), task_id=int(task["id"]), result=latest.get("result") or [],
                  reviewer=_reviewer(latest.get("completed_by"), reviewers),
                  reviewed_at=_timestamp(latest.get("updated_at") or latest.get("created_at")))


def same_track(traj: dict[str, Any], frames: list[int], boxes: list[list[float]], tolerance: float) -> bool:
    """Same frames and every coordinate within `tolerance`."""
    if list(traj.get("frame_index") or []) != frames:
        return False
    return all(abs(a - b) <= tolerance for old, new in zip(traj.get("box") or [], boxes, strict=True)
               for a, b in zip(old, new, strict=True))


def merged_instance(old: dict[str, Any] | None, region: dict[str, Any], new_id: int,
                    tolerance: float) -> tuple[dict[str, Any], bool]:
    """The reviewed instance and whether it differs from `old` (None for a reviewer-drawn region)."""
    frames, boxes = region["frames"], region["boxes"]
    caption = region.get("caption")
    if old is None:
        traj = {"frame_index": frames, "box": boxes, "mask_rle": [], "score": [1.0] * len(frames)}
        return {"instance_id": new_id, "phrase": region.get("phrase") or "", "caption": caption or "",
                "score": 1.0, "trajectory": traj}, True
    unchanged = same_track(old["trajectory"], frames, boxes, tolerance)
    traj = old["trajectory"] if unchanged else {"frame_index": frames, "box": boxes, "mask_rle": [],
                                                 "score": [1.0] * len(frames)}
    new = {**old, "phrase": region.get("phrase") or old["phrase"],
           "caption": caption if caption is not None else old["caption"], "trajectory": traj}
    changed = not unchanged or new["phrase"] != old["phrase"] or new["caption"] != old["caption"]
    return new, changed


def reviewed_instances(row: dict[str, Any], regions: dict[str, Any], tolerance: float) -> tuple[list, bool]:
    """The instances after review and whether any was changed, added or removed."""
    old_by_id = {inst["instance_id"]: inst for inst in row.get("instances") or []}
    next_id = max(old_by_id, default=-1) + 1
    instances, changed, kept = [], False, set()
    for region_key, region in regions.items():
        if not region.get("frames"):
            continue  # a caption without a box: nothing to ground
        instance_id = instance_id_of(region_key)
        old = old_by_id.get(instance_id) if instance_id is not None else None
        if old is None:
            instance_id, next_id = next_id, next_id + 1
        inst, differs = merged_instance(old, region, instance_id, tolerance)
        instances.append(inst)
        kept.add(instance_id)
        changed |= differs
    changed |= bool(set(old_by_id) - kept)
    return sorted(instances, key=lambda i: i["instance_id"]), changed


def log_entry(row: dict[str, Any], merged: dict[str, Any], status: str) -> dict[str, Any]:
    """Prediction and reviewed version of one sample, for the QC report."""
    before = {i["instance_id"]: i for i in row.get("instances") or []}
    after = {i["instance_id"]: i for i in merged.get("instances") or []}
    instances = []
    for instance_id in sorted(set(before) | set(after)):
        old, new = before.get(instance_id), after.get(instance_id)
        instances.append({
            "instance_id": instance_id, "phrase": (new or old)["phrase"],
            "caption_before": old and old["caption"], "caption_after": new and new["caption"],
            "frames_before": old and old["trajectory"]["frame_index"], "boxes_before": old and old["trajectory"]["box"],
            "frames_after": new and new["trajectory"]["frame_index"], "boxes_after": new and new["trajectory"]["box"]})
    prov = row.get("provenance") or {}
    return {"sample_id": row["sample_id"], "media_type": row["media_type"], "status": status,
            "task_id": merged["qc"]["task_id"], "reviewer": merged["qc"]["reviewer"],
            "models": {kv["key"]: kv["value"] for kv in prov.get("models") or []},
            "global_caption_before": row.get("global_caption"), "global_caption_after": merged["global_caption"],
            "instances": instances}


def merge_review(row: dict[str, Any], review: Review, tolerance: float,
                 route_reasons: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row after review (new dict) and its review log entry."""
    parsed = parse_result(review.result, int(row.get("num_frames") or 1))
    qc = {**(row.get("qc") or {}), "reviewer": review.reviewer, "reviewed_at": review.reviewed_at,
          "task_id": review.task_id}
    if route_reasons is not None:
        qc["route_reasons"] = list(route_reasons)
    if parsed["verdict"] == "reject":
        merged = {**row, "qc": {**qc, "status": "rejected"}}
        return merged, log_entry(row, merged, "rejected")
    instances, changed = reviewed_instances(row, parsed["regions"], tolerance)
    caption = parsed["global_caption"] or row.get("global_caption")
    changed |= caption != row.get("global_caption")
    status = "corrected" if changed else "accepted"
    merged = {**row, "instances": instances, "global_caption": caption, "qc": {**qc, "status": status}}
    return merged, log_entry(row, merged, status)
