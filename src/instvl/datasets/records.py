"""In-memory records for one InstVL row, convertible to and from the Parquet row dicts of `schema.SCHEMA`,
and the COCO RLE strings its `mask_rle` lists hold (at the row's height x width, `Sample.fit_masks`).

Every frame index belongs to one of three spaces, named once here (`FrameSpace`) and used everywhere:

- **source frame**: the frame number in the source video (`DecodedClip.source_frames`);
- **clip frame**: the frame number inside the clip, 0 being its first frame; shards store these;
- **sampled index**: the position in the sampled frames that detector, tracker and captioner see.

A `Trajectory` says which space its `frame_index` counts in. The trajectory builder fills it in sampled
space, `Trajectory.to_clip_frames` maps it once, and only a clip-space trajectory becomes a row.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instvl import __version__
from instvl.datasets.schema import InstanceRow, ProvenanceRow, QCRow, SampleRow, SourceRow, TrajectoryRow
from instvl.deps import require


class FrameSpace(StrEnum):
    """What a frame index counts."""

    SOURCE = "source_frame"
    """Frames of the source video."""
    CLIP = "clip_frame"
    """Frames of the clip, 0 = its first frame (what shard rows store)."""
    SAMPLED = "sampled_index"
    """Positions in the sampled frame sequence the annotation engines see (0..T-1)."""


@dataclass(slots=True)
class Trajectory:
    """Per-frame boxes of one instance: xyxy boxes normalised to [0, 1] at the frames `frame_index`,
    which count in `space` (clip frames, as rows store them, unless said otherwise)."""

    frame_index: list[int]
    box: list[list[float]]
    score: list[float] = field(default_factory=list)
    mask_rle: list[str] = field(default_factory=list)
    space: FrameSpace = FrameSpace.CLIP

    def boxes_array(self) -> NDArray[Any]:
        """The boxes as a (T, 4) float32 array."""
        return np.asarray(self.box, dtype=np.float32).reshape(-1, 4)

    def mean_score(self) -> float:
        """The mean per-frame score (0 when there are no scores)."""
        return float(np.mean(self.score)) if self.score else 0.0

    def mean_area(self) -> float:
        """The mean normalised box area (degenerate boxes count 0)."""
        boxes = self.boxes_array()
        if not len(boxes):
            return 0.0
        sides = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
        return float(np.mean(sides[:, 0] * sides[:, 1]))

    def require_space(self, space: FrameSpace, purpose: str) -> None:
        """Raise unless the frame indices count in `space`; spaces are never mixed silently."""
        if self.space != space:
            raise ValueError(f"{purpose} needs a trajectory in {FrameSpace(space).value} space; "
                             f"this one counts {FrameSpace(self.space).value}")

    def to_clip_frames(self, clip_frames: Sequence[int] | NDArray[Any]) -> "Trajectory":
        """This sampled-space trajectory in clip frames: sampled index k becomes `clip_frames[k]`
        (`DecodedClip.clip_frames`, the clip frame of each sampled frame)."""
        self.require_space(FrameSpace.SAMPLED, "to_clip_frames")
        first, last = (min(self.frame_index), max(self.frame_index)) if self.frame_index else (0, -1)
        if first < 0 or last >= len(clip_frames):
            raise IndexError(f"sampled indices {first}..{last} outside the {len(clip_frames)} sampled frames")
        return Trajectory(frame_index=[int(clip_frames[i]) for i in self.frame_index],
                          box=[list(b) for b in self.box], score=list(self.score),
                          mask_rle=list(self.mask_rle), space=FrameSpace.CLIP)

    def at_stored(self, store: Sequence[int]) -> "Trajectory":
        """This trajectory, tracked on denser frames, at the frames in `store` only, counted as positions
        among them (sampled space)."""
        position = {int(frame): k for k, frame in enumerate(store)}
        keep = [i for i, frame in enumerate(self.frame_index) if frame in position]
        return Trajectory(frame_index=[position[self.frame_index[i]] for i in keep],
                          box=[self.box[i] for i in keep], score=[self.score[i] for i in keep],
                          mask_rle=[self.mask_rle[i] for i in keep] if self.mask_rle else [],
                          space=FrameSpace.SAMPLED)

    def to_row(self) -> TrajectoryRow:
        """The row struct; refuses a trajectory that is not in clip frames."""
        self.require_space(FrameSpace.CLIP, "a shard row")
        return {"frame_index": [int(i) for i in self.frame_index],
                "box": [[float(v) for v in b] for b in self.box],
                "mask_rle": list(self.mask_rle), "score": [float(s) for s in self.score]}

    @classmethod
    def from_row(cls, row: TrajectoryRow | None) -> "Trajectory":
        """A clip-space trajectory from a row struct (None gives an empty one)."""
        row = row or {}
        return cls(frame_index=list(row.get("frame_index") or []),
                   box=[list(b) for b in row.get("box") or []], score=list(row.get("score") or []),
                   mask_rle=list(row.get("mask_rle") or []), space=FrameSpace.CLIP)


@dataclass(slots=True)
class Instance:
    """One grounded instance: a detector phrase, a caption and its trajectory (one box for images)."""

    instance_id: int
    phrase: str
    caption: str
    trajectory: Trajectory
    score: float = 1.0

    def to_row(self) -> InstanceRow:
        return {"instance_id": self.instance_id, "phrase": self.phrase, "caption": self.caption,
                "score": self.score, "trajectory": self.trajectory.to_row()}

    @classmethod
    def from_row(cls, row: InstanceRow) -> "Instance":
        score = row.get("score")
        return cls(instance_id=row["instance_id"], phrase=row.get("phrase") or "",
                   caption=row.get("caption") or "", score=score if score is not None else 1.0,
                   trajectory=Trajectory.from_row(row.get("trajectory")))


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

    def to_row(self) -> SampleRow:
        """The row dict that `pa.Table.from_pylist(rows, schema=SCHEMA)` accepts."""
        return {
            "sample_id": self.sample_id,
            "media_type": self.media_type,
            "source": {"uri": self.uri, "sha256": self.sha256,
                       "clip_start_s": self.clip_start_s, "clip_end_s": self.clip_end_s},
            "width": self.width, "height": self.height, "fps": self.fps, "num_frames": self.num_frames,
            "media_format": self.media_format, "media": self.media,
            "global_caption": self.global_caption,
            "instances": [inst.to_row() for inst in self.instances],
            "qc": {"status": self.qc.status, "reviewer": self.qc.reviewer, "reviewed_at": self.qc.reviewed_at,
                   "task_id": self.qc.task_id, "route_reasons": list(self.qc.route_reasons)},
            "provenance": {"instvl_version": __version__, "config_hash": self.config_hash,
                           "models": [{"key": k, "value": v} for k, v in sorted(self.models.items())],
                           "created_at": self.created_at or datetime.now(UTC)},
            "split": self.split,
        }

    def fit_masks(self, size: tuple[int, ...]) -> None:
        """Re-encode every mask, encoded at `size` (H, W, ...: the annotation frames' shape), at the row's
        (height, width), the size of the media the row stores: masks always describe the row's own media."""
        found, to = (int(size[0]), int(size[1])), (self.height, self.width)
        for inst in self.instances:
            traj = inst.trajectory
            traj.mask_rle = [resize_rle(counts, found, to) for counts in traj.mask_rle]

    @classmethod
    def from_row(cls, row: SampleRow) -> "Sample":
        """A Sample from a row dict as pyarrow's `to_pylist()` returns it (missing columns default)."""
        source: SourceRow = row.get("source") or {}
        qc: QCRow = row.get("qc") or {}
        prov: ProvenanceRow = row.get("provenance") or {}
        return cls(
            sample_id=row["sample_id"], media_type=row["media_type"],
            width=row.get("width") or 0, height=row.get("height") or 0,
            num_frames=row.get("num_frames") or 1, global_caption=row.get("global_caption") or "",
            instances=[Instance.from_row(r) for r in row.get("instances") or []],
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


def encode_rle(mask: NDArray[Any]) -> str:
    """COCO RLE counts of a (H, W) boolean mask, as the ASCII string stored in shards."""
    mask_api = require("pycocotools.mask", "annotate")
    return mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def rle_pixels(counts: str) -> int:
    """How many pixels a stored COCO RLE counts string covers (H x W of the mask it was encoded from).

    The string holds only the run lengths (pycocotools' compressed form: 5 bits a character, every run
    after the third stored as the difference to the run two before), so the size is their sum.
    ValueError on a string that is not one.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos == len(counts) or not 0 <= ord(counts[pos]) - 48 < 64:
                raise ValueError(f"not a COCO RLE counts string: {counts[:40]!r}")
            char = ord(counts[pos]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and char & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return sum(runs)


def decode_rle(counts: str, height: int, width: int) -> NDArray[Any]:
    """The (H, W) boolean mask of a stored COCO RLE counts string; ValueError when the string does not
    cover height x width pixels (pycocotools would return a wrong mask or fail without saying why)."""
    covered = rle_pixels(counts)
    if covered != height * width:
        raise ValueError(f"mask RLE covers {covered} pixels, not {height}x{width} = {height * width}: "
                         "it was encoded at another size")
    mask_api = require("pycocotools.mask", "annotate")
    with warnings.catch_warnings():  # pycocotools' own numpy-2 copy-keyword deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_api.decode({"size": [height, width], "counts": counts}).astype(bool)


def resize_rle(counts: str, size: tuple[int, int], to: tuple[int, int]) -> str:
    """A stored RLE mask encoded at `size` (H, W) re-encoded at `to` (H, W), area-resampled when shrinking
    (a pixel is kept when at least half of it was covered)."""
    if size == to or not counts:
        return counts
    cv2 = require("cv2", "video")
    mask = decode_rle(counts, *size).astype(np.uint8) * 255
    shrink = to[0] * to[1] < size[0] * size[1]
    resized = cv2.resize(mask, (to[1], to[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return encode_rle(resized >= 128)
