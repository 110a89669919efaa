"""Our instances <-> Label Studio results: VideoRectangle tracks for clips, RectangleLabels for images.

Label Studio counts frames from 1 (Label Studio frame = clip frame + 1) and gives boxes as x, y, width,
height in percent of the frame. A video track is a sequence of keyframes (one per annotated frame of
ours) that Label Studio interpolates between, so a strided track shows on every frame of its span; the
keyframe before a gap (a step clearly longer than the track's usual step, `routing.gap_steps`) and the
last one are `enabled: false`, so interpolation never bridges a gap or runs past the track. Every
keyframe carries `rotation: 0` (the interpolated export fails without it). Region ids are
`i<instance_id>`; a per-region TextArea with the same id holds the instance caption.

Our side is the record: an `Instance` with its clip-frame `Trajectory` becomes regions, and a reviewed
region becomes a `Trajectory` again on its keyframes only (frames Label Studio interpolated are not
reviewed boxes): reviewed boxes, score 1, no masks; `merge` restores score and mask where a box stayed.
A task is identified by (dataset id, sample id, prediction fingerprint): `prediction_fingerprint` hashes
the result a row is pushed as, so pull merges a review only into the very row it was made on.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from instvl.datasets.records import FrameSpace, Instance, Trajectory
from instvl.datasets.schema import SampleRow
from instvl.qa.routing import gap_steps

VIDEO_KEY, IMAGE_KEY = "video", "image"
BOX_NAME, INSTANCE_CAPTION, GLOBAL_CAPTION, VERDICT = "box", "inst_caption", "global_caption", "verdict"
GLOBAL_ID, VERDICT_ID = "global", "verdict"
TRACK_KEYS = ("x", "y", "width", "height", "rotation")
DEFAULT_FPS = 25.0
"""The frame rate assumed for a clip whose row has none (also the label config's default)."""


def review_fps(row: SampleRow) -> float:
    """The frame rate a video row is reviewed at: its own, or DEFAULT_FPS when the row has none."""
    fps = row.get("fps")
    return float(fps) if fps else DEFAULT_FPS


def prediction_fingerprint(row: SampleRow) -> str:
    """A digest of what a reviewer judges in `row`: its boxes, labels and captions (not scores or masks,
    and not how they are encoded for Label Studio, so a change of that encoding keeps old tasks valid)."""
    instances = [{"id": i["instance_id"], "phrase": i.get("phrase"), "caption": i.get("caption"),
                  "frames": list((i.get("trajectory") or {}).get("frame_index") or []),
                  "boxes": [list(b) for b in (i.get("trajectory") or {}).get("box") or []]}
                 for i in row.get("instances") or []]
    judged = {"media_type": row["media_type"], "num_frames": row.get("num_frames"),
              "global_caption": row.get("global_caption"), "instances": instances}
    canonical = json.dumps(judged, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def region_id(instance_id: int) -> str:
    return f"i{instance_id}"


def instance_id_of(region: str) -> int | None:
    """The instance id encoded in a region id we made, or None for a region a reviewer drew."""
    return int(region[1:]) if region.startswith("i") and region[1:].isdigit() else None


def box_to_percent(box: list[float]) -> dict[str, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"x": x0 * 100, "y": y0 * 100, "width": (x1 - x0) * 100, "height": (y1 - y0) * 100}


def percent_to_box(item: dict[str, Any]) -> list[float]:
    """xyxy in [0, 1] from percent x, y, width, height (clipped: reviewers can drag past the edge)."""
    x0, y0 = item["x"] / 100, item["y"] / 100
    x1, y1 = x0 + item["width"] / 100, y0 + item["height"] / 100
    return [min(max(v, 0.0), 1.0) for v in (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))]


def trajectory_to_sequence(trajectory: Trajectory, fps: float) -> list[dict[str, Any]]:
    """Keyframes of one clip-frame track: 1-based frames, percent boxes; interpolation on between
    keyframes of the track's usual step, off (`enabled: false`) before a gap and at the end."""
    trajectory.require_space(FrameSpace.CLIP, "a Label Studio track")
    frames, boxes = [int(i) for i in trajectory.frame_index], trajectory.box
    ends = gap_steps(frames) + [True]
    sequence = []
    for index, box, last_of_span in zip(frames, boxes, ends, strict=True):
        sequence.append({"frame": index + 1, **box_to_percent(box), "rotation": 0,
                         "enabled": not last_of_span, "time": (index + 1) / fps})
    return sequence


def interpolate_sequence(sequence: list[dict[str, Any]], frames_count: int) -> dict[int, dict[str, float]]:
    """1-based frame -> box item of every frame a track covers, as Label Studio's interpolated export.

    An enabled keyframe is interpolated linearly to the next keyframe (held until `frames_count` when it
    is the last); a disabled keyframe ends its span. Already interpolated sequences pass through unchanged.
    """
    keys = sorted(sequence, key=lambda item: item["frame"])
    covered: dict[int, dict[str, float]] = {}
    for k, start in enumerate(keys):
        covered[int(start["frame"])] = {key: float(start.get(key, 0)) for key in TRACK_KEYS}
        if not start.get("enabled", True):
            continue
        end = keys[k + 1] if k + 1 < len(keys) else None
        stop = int(end["frame"]) if end else frames_count + 1
        for frame in range(int(start["frame"]) + 1, stop):
            t = (frame - start["frame"]) / (end["frame"] - start["frame"]) if end else 0.0
            covered[frame] = _lerp(start, end or start, t)
    return dict(sorted(covered.items()))


def _lerp(a: dict[str, Any], b: dict[str, Any], t: float) -> dict[str, float]:
    return {key: float(a.get(key, 0)) + t * (float(b.get(key, 0)) - float(a.get(key, 0)))
            for key in TRACK_KEYS}


def sequence_to_trajectory(sequence: list[dict[str, Any]], num_frames: int) -> Trajectory:
    """The clip-frame trajectory of a (keyframe or interpolated) sequence: its keyframes inside the clip.

    Frames Label Studio filled in (`auto: true` in an interpolated export) are left out: they are not
    boxes anyone placed, and keeping them would turn every accepted strided track into a new one.
    """
    keys = {int(item["frame"]): item for item in sequence if not item.get("auto")}
    frames = [f for f in sorted(keys)
              if 1 <= f <= num_frames and keys[f].get("width") and keys[f].get("height")]
    return reviewed_trajectory([f - 1 for f in frames], [percent_to_box(keys[f]) for f in frames])


def reviewed_trajectory(frames: list[int], boxes: list[list[float]]) -> Trajectory:
    """A trajectory a reviewer drew or corrected: clip frames, score 1 on every frame, no masks."""
    return Trajectory(frame_index=frames, box=boxes, score=[1.0] * len(frames), space=FrameSpace.CLIP)


def _text(region: str, name: str, to_name: str, text: str) -> dict[str, Any]:
    return {"id": region, "from_name": name, "to_name": to_name, "type": "textarea",
            "value": {"text": [text]}}


def video_regions(inst: Instance, num_frames: int, fps: float) -> list[dict[str, Any]]:
    """The VideoRectangle track of one instance and its caption."""
    region = region_id(inst.instance_id)
    value = {"framesCount": num_frames, "duration": num_frames / fps, "labels": [inst.phrase],
             "sequence": trajectory_to_sequence(inst.trajectory, fps)}
    return [{"id": region, "from_name": BOX_NAME, "to_name": VIDEO_KEY, "type": "videorectangle",
             "value": value},
            _text(region, INSTANCE_CAPTION, VIDEO_KEY, inst.caption)]


def image_regions(inst: Instance, width: int, height: int) -> list[dict[str, Any]]:
    """The rectangle of one image instance and its caption."""
    region = region_id(inst.instance_id)
    if not inst.trajectory.box:
        return []
    value = {**box_to_percent(inst.trajectory.box[0]), "rotation": 0, "rectanglelabels": [inst.phrase]}
    return [{"id": region, "from_name": BOX_NAME, "to_name": IMAGE_KEY, "type": "rectanglelabels",
             "original_width": width, "original_height": height, "image_rotation": 0, "value": value},
            _text(region, INSTANCE_CAPTION, IMAGE_KEY, inst.caption)]


def row_to_result(row: SampleRow) -> list[dict[str, Any]]:
    """The Label Studio result (used as prediction) of one SCHEMA row: tracks or boxes plus captions."""
    video = row["media_type"] == "video"
    result: list[dict[str, Any]] = []
    for inst in map(Instance.from_row, row.get("instances") or []):
        if video:
            result += video_regions(inst, int(row["num_frames"]), review_fps(row))
        else:
            result += image_regions(inst, int(row["width"]), int(row["height"]))
    to_name = VIDEO_KEY if video else IMAGE_KEY
    return result + [_text(GLOBAL_ID, GLOBAL_CAPTION, to_name, row.get("global_caption") or "")]


def _joined(item: dict[str, Any]) -> str:
    return " ".join(t.strip() for t in item.get("value", {}).get("text") or [] if t.strip())


@dataclass
class Region:
    """One reviewed region: its label, caption and clip-frame trajectory (None: a caption without a box)."""

    phrase: str | None = None
    caption: str | None = None
    trajectory: Trajectory | None = None


@dataclass
class ParsedResult:
    """A reviewer's result: the verdict, the global caption and the regions by region id."""

    verdict: str | None = None
    global_caption: str | None = None
    regions: dict[str, Region] = field(default_factory=dict)


def parse_result(result: list[dict[str, Any]], num_frames: int) -> ParsedResult:
    """A reviewer's result read back into records (see `ParsedResult`)."""
    parsed = ParsedResult()
    for item in result:
        name, value, region_key = item.get("from_name"), item.get("value") or {}, str(item.get("id"))
        if name == VERDICT and value.get("choices"):
            parsed.verdict = value["choices"][0]
        elif name == GLOBAL_CAPTION:
            parsed.global_caption = _joined(item)
        elif name == INSTANCE_CAPTION:
            parsed.regions.setdefault(region_key, Region()).caption = _joined(item)
        elif item.get("type") in ("videorectangle", "rectanglelabels"):
            video = item["type"] == "videorectangle"
            labels = value.get("labels" if video else "rectanglelabels") or []
            region = parsed.regions.setdefault(region_key, Region())
            region.phrase = labels[0] if labels else None
            region.trajectory = (sequence_to_trajectory(value.get("sequence") or [], num_frames) if video
                                 else reviewed_trajectory([0], [percent_to_box(value)]))
    return parsed
