"""In-memory records for one InstVL row, convertible to and from the Parquet row dicts of `schema.SCHEMA`."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from instvl import __version__


@dataclass(slots=True)
class Trajectory:
    """Per-frame boxes of one instance: frame indices into the clip, xyxy boxes normalised to [0, 1]."""

    frame_index: list[int]
    box: list[list[float]]
    score: list[float] = field(default_factory=list)
    mask_rle: list[str] = field(default_factory=list)

    def boxes_array(self) -> np.ndarray:
        """The boxes as a (T, 4) float32 array."""
        return np.asarray(self.box, dtype=np.float32).reshape(-1, 4)


@dataclass(slots=True)
class Instance:
    """One grounded instance: a detector phrase, a caption and its trajectory (one box for images)."""

    instance_id: int
    phrase: str
    caption: str
    trajectory: Trajectory
    score: float = 1.0


@dataclass(slots=True)
class QCRecord:
    """Review state of a sample."""

    status: str = "auto"
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    task_id: int | None = None
    route_reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Sample:
    """One InstVL row: an image or a video clip with its global caption and instances."""

    sample_id: str
    media_type: str
    width: int
    height: int
    num_frames: int
    global_caption: str
    instances: list[Instance] = field(default_factory=list)
    fps: float | None = None
    media: bytes | None = None
    media_format: str | None = None
    uri: str | None = None
    sha256: str | None = None
    clip_start_s: float | None = None
    clip_end_s: float | None = None
    qc: QCRecord = field(default_factory=QCRecord)
    models: dict[str, str] = field(default_factory=dict)
    config_hash: str | None = None
    created_at: datetime | None = None
    split: str = "train"

    def to_row(self) -> dict[str, Any]:
        """The row dict that `pa.Table.from_pylist(rows, schema=SCHEMA)` accepts."""
        return {
            "sample_id": self.sample_id,
            "media_type": self.media_type,
            "source": {"uri": self.uri, "sha256": self.sha256,
                       "clip_start_s": self.clip_start_s, "clip_end_s": self.clip_end_s},
            "width": self.width, "height": self.height, "fps": self.fps, "num_frames": self.num_frames,
            "media_format": self.media_format, "media": self.media,
            "global_caption": self.global_caption,
            "instances": [_instance_row(inst) for inst in self.instances],
            "qc": {"status": self.qc.status, "reviewer": self.qc.reviewer, "reviewed_at": self.qc.reviewed_at,
                   "task_id": self.qc.task_id, "route_reasons": list(self.qc.route_reasons)},
            "provenance": {"instvl_version": __version__, "config_hash": self.config_hash,
                           "models": [{"key": k, "value": v} for k, v in sorted(self.models.items())],
                           "created_at": self.created_at or datetime.now(UTC)},
            "split": self.split,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Sample":
        """Rebuild a Sample from a row dict as pyarrow's `to_pylist()` returns it."""
        source = row.get("source") or {}
        qc = row.get("qc") or {}
        prov = row.get("provenance") or {}
        return cls(
            sample_id=row["sample_id"], media_type=row["media_type"],
            width=row.get("width") or 0, height=row.get("height") or 0,
            num_frames=row.get("num_frames") or 1, global_caption=row.get("global_caption") or "",
            instances=[_instance_from_row(r) for r in row.get("instances") or []],
            fps=row.get("fps"), media=row.get("media"), media_format=row.get("media_format"),
            uri=source.get("uri"), sha256=source.get("sha256"),
            clip_start_s=source.get("clip_start_s"), clip_end_s=source.get("clip_end_s"),
            qc=QCRecord(status=qc.get("status") or "auto", reviewer=qc.get("reviewer"),
                        reviewed_at=qc.get("reviewed_at"), task_id=qc.get("task_id"),
                        route_reasons=list(qc.get("route_reasons") or [])),
            models={kv["key"]: kv["value"] for kv in prov.get("models") or []},
            config_hash=prov.get("config_hash"), created_at=prov.get("created_at"),
            split=row.get("split") or "train",
        )


def _instance_row(inst: Instance) -> dict[str, Any]:
    traj = inst.trajectory
    return {
        "instance_id": inst.instance_id, "phrase": inst.phrase, "caption": inst.caption, "score": inst.score,
        "trajectory": {"frame_index": [int(i) for i in traj.frame_index],
                       "box": [[float(v) for v in b] for b in traj.box],
                       "mask_rle": list(traj.mask_rle), "score": [float(s) for s in traj.score]},
    }


def _instance_from_row(row: dict[str, Any]) -> Instance:
    traj = row.get("trajectory") or {}
    return Instance(
        instance_id=row["instance_id"], phrase=row.get("phrase") or "", caption=row.get("caption") or "",
        score=row.get("score") if row.get("score") is not None else 1.0,
        trajectory=Trajectory(frame_index=list(traj.get("frame_index") or []),
                              box=[list(b) for b in traj.get("box") or []],
                              score=list(traj.get("score") or []), mask_rle=list(traj.get("mask_rle") or [])),
    )
