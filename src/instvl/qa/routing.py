"""Review routing: which samples a person should check, and why.

A sample is routed when the detector or tracker was unsure, a trajectory is short or broken by gaps, or
a caption looks wrong (too short, repetitive, not naming its phrase, copied between instances). A
random audit share, deterministic in (seed, sample_id), is routed too so that quality estimates from
review are not biased towards the suspicious cases. Reasons are 'code: detail' strings recorded in
`qc.route_reasons`; `reason_code` gives the stable code.
"""

import hashlib
import re
from collections import Counter

from pydantic import Field

from instvl.config import BaseConfig
from instvl.datasets.schema import InstanceRow, QCRow, SampleRow

WORD = re.compile(r"[a-z0-9]+")
REASON_CODES = ("low_instance_score", "low_frame_score", "weak_short_track", "short_track",
                "fragmented_track", "no_instances", "short_caption", "repeated_words", "phrase_not_mentioned",
                "duplicate_caption", "audit")


class RoutingConfig(BaseConfig):
    """Thresholds of the review routing."""

    min_instance_score: float = Field(0.3, ge=0, le=1)
    """Instances scored below this are reviewed (`Instance.score`: mean detector confidence over the
    keyframes of the track's span, 0 where unconfirmed). The track thresholds were chosen on the
    tracking benchmark's dev seeds 0 and 4-8 (`bench/tracking.py`, docs/BENCHMARKS.md) to route its bad
    tracks; they assume a detector whose true boxes score about 0.6-0.9, so recalibrate for another."""
    min_frame_score: float = Field(0.0, ge=0, le=1)
    """A track with any frame scored below this is reviewed (0: off; on the dev seeds 0.05 routed 16
    tracks of which 1 was bad: the tracker is rightly unsure while an object is half hidden)."""
    weak_track_frames: int = Field(9, ge=0)
    """Video tracks with fewer boxes than this and an instance score below `weak_track_score` are
    reviewed: on the tracking benchmark these are mostly tracks the detector confirmed once, late in the
    clip (a false positive kept alive by backfill or the clip's end). 0: off."""
    weak_track_score: float = Field(0.4, ge=0, le=1)
    """See `weak_track_frames`."""
    min_track_frames: int = Field(2, ge=1)
    """Video tracks with fewer boxes are reviewed."""
    max_track_gaps: int = Field(1, ge=0)
    """Video tracks broken into more than this many gaps (steps longer than the usual step) are reviewed."""
    min_caption_words: int = Field(3, ge=1)
    """Captions (global or instance) with fewer words are reviewed."""
    max_repeat_share: float = Field(0.5, gt=0, le=1)
    """Captions whose most frequent word makes up more than this share of the words are reviewed."""
    require_phrase_in_caption: bool = True
    """Review instances whose caption mentions no word of their phrase."""
    audit_fraction: float = Field(0.05, ge=0, le=1)
    """Share of all samples routed at random for an unbiased quality estimate."""
    seed: int = 0
    """Seed of the audit draw."""


def reason_code(reason: str) -> str:
    """The stable code of a reason string ('short_track: instance 2 has 1 box' -> 'short_track')."""
    return reason.split(":", 1)[0].strip()


def audit_draw(sample_id: str, seed: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, sample_id)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def words(text: str | None) -> list[str]:
    return WORD.findall((text or "").lower())


def caption_problems(text: str | None, cfg: RoutingConfig, where: str) -> list[str]:
    """Too short or repetitive captions."""
    tokens = words(text)
    if len(tokens) < cfg.min_caption_words:
        return [f"short_caption: {where} has {len(tokens)} word(s) < {cfg.min_caption_words}"]
    word, count = Counter(tokens).most_common(1)[0]
    if len(tokens) >= 4 and count / len(tokens) > cfg.max_repeat_share:
        return [f"repeated_words: {where} repeats {word!r} {count} of {len(tokens)} times"]
    return []


def count_gaps(frames: list[int]) -> int:
    """Breaks in a trajectory: steps longer than its usual step between annotated frames.

    Annotation samples frames (every k-th, or evenly spread), so consecutive boxes are normally k
    frames apart; only a step clearly longer than the median step means the object was lost.
    """
    return sum(gap_steps(frames))


def gap_steps(frames: list[int]) -> list[bool]:
    """For each step between consecutive annotated frames, whether it is a gap (see `count_gaps`)."""
    steps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    if not steps:
        return []
    usual = sorted(steps)[(len(steps) - 1) // 2]  # the lower median: one long step in two is a gap
    return [step > max(1, 1.5 * usual) for step in steps]


def track_problems(inst: InstanceRow, media_type: str, cfg: RoutingConfig) -> list[str]:
    """Low scores, short or fragmented trajectories of one instance."""
    name = f"instance {inst.get('instance_id')}"
    traj = inst.get("trajectory") or {}
    frames, scores = list(traj.get("frame_index") or []), list(traj.get("score") or [])
    reasons = []
    score = inst.get("score")
    if score is not None and score < cfg.min_instance_score:
        reasons.append(f"low_instance_score: {name} scored {score:.2f} < {cfg.min_instance_score}")
    if scores and min(scores) < cfg.min_frame_score:
        reasons.append(f"low_frame_score: {name} has a frame scored {min(scores):.2f} "
                       f"< {cfg.min_frame_score}")
    if media_type == "video" and score is not None and len(frames) < cfg.weak_track_frames \
            and score < cfg.weak_track_score:
        reasons.append(f"weak_short_track: {name} has {len(frames)} box(es) < {cfg.weak_track_frames} and "
                       f"scored {score:.2f} < {cfg.weak_track_score}")
    if media_type == "video" and len(frames) < cfg.min_track_frames:
        reasons.append(f"short_track: {name} has {len(frames)} box(es) < {cfg.min_track_frames}")
    gaps = count_gaps(frames)
    if media_type == "video" and gaps > cfg.max_track_gaps:
        reasons.append(f"fragmented_track: {name} has {gaps} gaps > {cfg.max_track_gaps}")
    return reasons


def instance_caption_problems(instances: list[InstanceRow], cfg: RoutingConfig) -> list[str]:
    """Per-instance caption checks plus captions shared by several instances."""
    reasons = []
    for inst in instances:
        name = f"instance {inst.get('instance_id')}"
        caption, phrase = inst.get("caption") or "", inst.get("phrase") or ""
        reasons += caption_problems(caption, cfg, f"{name} caption")
        if cfg.require_phrase_in_caption and words(phrase) and not set(words(phrase)) & set(words(caption)):
            reasons.append(f"phrase_not_mentioned: {name} caption does not mention {phrase!r}")
    seen = Counter(" ".join(words(inst.get("caption"))) for inst in instances)
    for text, count in sorted(seen.items()):
        if text and count > 1:
            reasons.append(f"duplicate_caption: {count} instances share the caption {text!r}")
    return reasons


def route_row(row: SampleRow, cfg: RoutingConfig) -> list[str]:
    """Why the sample in `row` (a SCHEMA row dict) should be reviewed; empty when it need not be."""
    instances = list(row.get("instances") or [])
    media_type = row.get("media_type") or "video"
    reasons = [] if instances else ["no_instances: nothing was detected"]
    for inst in instances:
        reasons += track_problems(inst, media_type, cfg)
    reasons += caption_problems(row.get("global_caption"), cfg, "global caption")
    reasons += instance_caption_problems(instances, cfg)
    if audit_draw(str(row["sample_id"]), cfg.seed) < cfg.audit_fraction:
        reasons.append(f"audit: random {cfg.audit_fraction:.0%} quality sample")
    return reasons


def awaiting_review(qc: QCRow | None) -> bool:
    """Whether a row was routed to review (a reason with a routing code, audit included) and no reviewer
    has judged it yet: such rows are held out of training unless `data.include_unreviewed`."""
    qc = qc or {}
    routed = any(reason_code(r) in REASON_CODES for r in qc.get("route_reasons") or [])
    return routed and (qc.get("status") or "auto") == "auto"


def route_rows(rows: list[SampleRow], cfg: RoutingConfig) -> dict[str, list[str]]:
    """sample_id -> reasons for every row (an empty list means publish without review)."""
    return {str(row["sample_id"]): route_row(row, cfg) for row in rows}


def with_route_reasons(row: SampleRow, reasons: list[str]) -> SampleRow:
    """A copy of `row` whose qc.route_reasons holds `reasons`."""
    qc: QCRow = row.get("qc") or {"status": "auto", "reviewer": None, "reviewed_at": None, "task_id": None,
                                  "route_reasons": []}
    return {**row, "qc": {**qc, "route_reasons": list(reasons)}}
