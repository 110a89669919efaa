"""Trajectory builder: keyframe detections + windowed tracking -> identity-stable instance trajectories.

The video is consumed as a stream in windows of `redetect_every + 1` frames; consecutive windows share
one frame, the next keyframe. On each keyframe the detector runs and its boxes are matched (Hungarian)
to every live track, phrase-agnostic by default (a detection may name a tracked object by a synonym):
the match score is the better box IoU against the tracker's box for that frame and against a
constant-velocity guess from the track's last confirmed boxes, less `label_penalty` across label groups.

Confirmation. A track's frames stay tentative until a detection confirms the track again: matched
through the tracker's own box, the frames since the last confirmation are committed; matched only
through the motion guess (the tracker drifted or lost it), they are dropped. A track the detector has
not confirmed for more than `max_unconfirmed` keyframes is cut back to its last confirmed frame and
becomes lost, and so does an unconfirmed track that converged onto a confirmed one (a duplicate: mask
IoU when the tracker gives masks, else box IoU, above `merge_iou`). A lost track is no longer
propagated; a detection near its motion guess revives it with its id, and so does a detection no box
matched that looks like it (colours and size) within a few box sizes of where it was last confirmed (an
object back from behind an occluder or from outside the frame, where straight-line motion did not
predict it); it ends after `max_missed` frames. Appearance (`annotate.appearance`) also guards the
tracker: a track whose tracked box on a keyframe no longer looks like it has drifted and is cut back and
lost (`drift_similarity`), and a track not confirmed right now matches only detections that look like it
(`match_similarity`). When the clip ends, a track that starts after another ended and looks like it
where that one was expected continues it (`stitch_similarity`, `annotate.stitching`). A new track needs
a second confirmation before its frames count, so one-off false positives leave no track; a detection
below `birth_score` keeps a new track alive but is not that confirmation. When the clip ends, a track's
frames since its last confirmation are kept up to the first one the tracker scored below `end_score`. A
detection starts a track unless it duplicates a prompt of the same label group (`duplicate_iou`; other
labels only above `cross_label_duplicate_iou`, so a rider on a horse is born). With `backfill`, a track
born at a keyframe is also tracked backwards through the previous window. A track's phrase is the label
its detections voted for (score-weighted).

Scores. `Trajectory.score[i]` is the detector's confidence on a keyframe that confirmed the track, and
elsewhere the last confirming confidence times the tracker's score on that frame (each tracker
documents a score in [0, 1] that is low when it is unsure). `Instance.score` is the mean detector
confidence over the keyframes within the track's span (backfilled frames included), counting 0 where
the detector did not confirm it: a track confirmed once scores low however confident that detection was.

Trackers re-prompt continuing tracks with their last mask where they have one (`TrackSeed.mask`). With
`keep_masks`, the tracker's masks are stored as COCO RLE; a tracker without masks stores none (never a
box drawn as a mask). Tracks too short or too small are dropped; ids are renumbered 0..K-1 in order of
first appearance. At most one window of frames is held in memory (two with `backfill`).

Frames: `build(frames, phrases, store=...)` tracks on every given frame (dense, e.g. `track_fps`) and
stores only the positions in `store`. A finished track is an uncaptioned `records.Instance` whose
trajectory counts sampled indices (`FrameSpace.SAMPLED`, positions among the stored frames);
`Trajectory.to_clip_frames` maps it for the shard.
"""

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from instvl.annotate.appearance import Look, appearance, blend, look_similarity
from instvl.annotate.detect.base import Detector
from instvl.annotate.live_track import LiveTrack, TrackFrame
from instvl.annotate.stitching import stitch
from instvl.annotate.track.base import Tracker
from instvl.annotate.tracks import Detection, TrackedFrame, TrackedObject, TrackSeed
from instvl.config import BaseConfig
from instvl.datasets.records import FrameSpace, Instance, Trajectory
from instvl.deps import require
from instvl.geometry import Box, as_box, box_iou, clip_boxes

log = logging.getLogger(__name__)


class TrajectoryConfig(BaseConfig):
    """How detections and tracker output become trajectories."""

    redetect_every: int = 8
    """Frames between keyframe detections; a tracker window holds redetect_every + 1 frames."""
    track_fps: float | None = None
    """Frame rate to track at when the caller decodes denser frames than it stores (`build(store=...)`);
    None: track on the stored frames."""
    match_iou: float = 0.3
    """Minimum match score (box IoU, see `label_penalty`) between a detection and a track."""
    duplicate_iou: float = 0.6
    """An unmatched detection overlapping a prompt of its label group this much starts no new track."""
    cross_label_duplicate_iou: float = 0.9
    """... and overlapping a prompt of another label group this much (a rider on a horse is born)."""
    merge_iou: float = 0.6
    """An unconfirmed track overlapping a confirmed (or older) one this much is a duplicate and is lost."""
    lost_growth: float = 0.05
    """A lost track's predicted box grows by this fraction of its size per frame since last seen."""
    class_aware: bool = False
    """Only match detections to tracks of the same label group (False: any label, with a penalty)."""
    label_penalty: float = 0.1
    """Subtracted from the match score of a detection whose label is not in the track's label group."""
    synonyms: list[list[str]] = []
    """Groups of phrases that name the same kind of object (e.g. [person, man, woman])."""
    max_unconfirmed: int = 2
    """Keyframes a track may go without a matching detection before it is cut back and lost."""
    birth_score: float = 0.0
    """Detections scored below this confirm tracks but start none."""
    backfill: bool = False
    """Track objects born at a keyframe backwards through the previous window."""
    seed_velocity: bool = False
    """Tell the tracker each continuing track's recent velocity (`TrackSeed.velocity`). Off: on the
    tracking benchmark's dev seeds it changed ID switches by noise only (0.56 vs 0.61 per 10 tracks)."""
    revive_similarity: float = 0.8
    """A detection no box matched (scored at least `birth_score`) revives a lost track whose appearance
    (colours and size of its confirming detections) it matches at least this much (0: no revival by
    looks)."""
    revive_distance: float = 2.0
    """... within this many of the track's box sizes of its last confirmed box or its motion guess."""
    stitch_similarity: float = 0.75
    """When the clip ends, a track that starts after another ended and looks at least this much like it,
    within `revive_distance` of where it was expected, continues it (0: off). 0.75 with
    `look_size_weight` 0.5 (0.8 with colours alone; tracking benchmark, dev seeds)."""
    stitch_gap: int = 32
    """... when it starts at most this many frames after the other one's last frame."""
    match_similarity: float = 0.7
    """A detection matches a track that is not confirmed right now (lost, not confirmed on the last
    keyframe, or confirmed only once) only if it looks at least this much like the track's confirmed
    appearance (0: no check); such a track's box is the tracker's or the motion guess's word alone, and
    either may have moved onto a neighbour."""
    drift_similarity: float = 0.7
    """On a keyframe, a track whose tracked box looks less than this like its confirmed appearance has
    drifted off its object: it is cut back to its last confirmed frame (committed frames after it
    included) and lost, so a detection of the object can revive it (0: no check)."""
    look_size_weight: float = 0.5
    """How much a difference in box size lowers the similarity of two looks (`annotate.appearance`; 0:
    colours only), so that same-colour look-alikes of different sizes are told apart; 0.5 of 0.3/0.5/1.0
    on the tracking benchmark's dev seeds."""
    look_update: float = 0.3
    """Weight of each new confirming detection in a track's running appearance."""
    max_missed: int = 8
    """Consecutive frames a track may be lost (occluded, undetected) before it ends."""
    min_score: float = 0.0
    """Per-frame tracker score below which the object counts as lost on that frame."""
    end_score: float = 0.0
    """At the clip's end, the frames tracked since the last confirmation are kept up to the first one
    whose tracker score is below this (the detector can no longer vouch for them)."""
    min_frames: int = 3
    """Tracks with fewer frames are dropped (clips shorter than this need a track on every frame)."""
    min_area: float = 0.0005
    """Tracks whose mean normalised box area is smaller are dropped."""
    max_tracks: int = 64
    """At most this many objects are tracked at once (the best-scoring detections win)."""
    keep_masks: bool = False
    """Store the tracker's mask per frame as COCO RLE (none when the tracker gives no masks)."""

    def build(self, detector: Detector, tracker: Tracker) -> "TrajectoryBuilder":
        return TrajectoryBuilder(self, detector, tracker)


class TrajectoryBuilder:
    """Runs a detector and a tracker over a stream of frames and returns the finished tracks."""

    def __init__(self, config: TrajectoryConfig, detector: Detector, tracker: Tracker):
        if config.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {config.redetect_every}")
        self.config, self.detector, self.tracker = config, detector, tracker
        self.stats: dict[str, int] = {}
        self._group = {p.lower(): i for i, group in enumerate(config.synonyms) for p in group}

    def build(self, frames: Iterable[np.ndarray], phrases: Sequence[str],
              store: Sequence[int] | None = None) -> list[Instance]:
        """Uncaptioned instances of every phrase in `frames` (RGB uint8 (H, W, 3), consumed lazily).

        Tracking runs on every frame; only the frames at positions `store` (increasing; None: all) are
        stored, and trajectories count positions among them (sampled indices).
        """
        self._live: list[LiveTrack] = []
        self._done: list[LiveTrack] = []
        self._next_id = 0
        self._previous: list[np.ndarray] = []
        self.stats = {"frames": 0, "windows": 0, "detections": 0, "tracks_started": 0, "tracks_dropped": 0,
                      "frames_dropped": 0, "duplicates_lost": 0, "backfilled": 0, "revived": 0,
                      "drifted": 0, "stitched": 0}
        window: list[np.ndarray] = []
        start = 0
        for index, frame in enumerate(frames):
            window.append(frame)
            if len(window) == self.config.redetect_every + 1:
                self._run_window(window, start, phrases, last=False)
                window, start = [frame], index
        if window:
            self._run_window(window, start, phrases, last=True)
        self.stats["frames"] = start + len(window) if window else 0
        return self._finish(self.stats["frames"], store)

    def _run_window(self, window: list[np.ndarray], start: int, phrases: Sequence[str], last: bool) -> None:
        self.stats["windows"] += 1
        self._last_keyframe = start
        detections = self.detector.detect(window[:1], phrases)[0]
        self.stats["detections"] += len(detections)
        seeds, born = self._seeds(detections, start, window[0])
        if born and self.config.backfill and self._previous:
            self._backfill(born, seeds, start)
        tracked = self.tracker.track(np.stack(window), seeds) if seeds else \
            [TrackedFrame(k) for k in range(len(window))]
        recorded = tracked if last else tracked[:-1]
        for offset, frame in enumerate(recorded):  # the tracker's k-th frame is sampled frame start + k
            self._record(start + offset, frame)
        if not last:
            self._set_pending(tracked[-1])
        self._end_lost_tracks()
        self._previous = window if self.config.backfill else []

    def _label(self, phrase: str) -> int | str:
        return self._group.get(phrase.lower(), phrase.lower())

    def _track_label(self, live: LiveTrack) -> int | str:
        voted = max(live.votes, key=live.votes.__getitem__) if live.votes else live.instance.phrase
        return self._label(voted)

    def _seeds(self, detections: list[Detection], keyframe: int,
               image: np.ndarray) -> tuple[list[TrackSeed], list[LiveTrack]]:
        """Match detections to live tracks, confirm, suspend or re-prompt each track, and start new ones;
        the tracker prompts for this keyframe and the tracks born on it."""
        cfg = self.config
        detections = sorted(detections, key=lambda d: -d.score)
        looks = [appearance(image, d.box_xyxy) for d in detections]
        self._check_drift(image)
        matches, via_tracker = self._associate(detections, looks, keyframe)
        matches.update(self._revive(detections, looks, matches, keyframe))
        seeds: list[TrackSeed] = []
        confirmed: list[tuple[LiveTrack, TrackSeed]] = []
        for d, live in matches.items():
            det = detections[d]
            self._confirm(live, det, keyframe, via_tracker.get(d, False))
            live.look = blend(live.look, looks[d], cfg.look_update)
            seed = TrackSeed(live.instance.instance_id, det.box_xyxy, det.phrase, det.score,
                             velocity=live.velocity(keyframe) if cfg.seed_velocity else None)
            seeds.append(seed)
            confirmed.append((live, seed))
        matched = {id(live) for live in matches.values()}
        # Continuing tracks the detector missed: oldest and most confirmed first, so of two converging
        # tracks the newer one is the duplicate.
        others = sorted((live for live in self._live if id(live) not in matched and live.active),
                        key=lambda t: (-t.confirmations, t.instance.instance_id))
        for live in others:
            if live.pending is None:
                self._suspend(live, drop=False)
                continue
            live.unconfirmed += 1
            live.det_scores.append((keyframe, 0.0))
            if live.unconfirmed > cfg.max_unconfirmed:
                self._suspend(live, drop=True)
                continue
            if any(self._overlap(live.pending, live.pending_mask, t.pending if t.pending is not None else
                                 s.box_xyxy, t.pending_mask) >= cfg.merge_iou for t, s in confirmed):
                self.stats["duplicates_lost"] += 1
                self._suspend(live, drop=True)
                continue
            seed = TrackSeed(live.instance.instance_id, live.pending, live.instance.phrase, live.det_score,
                             live.pending_mask, live.velocity(keyframe) if cfg.seed_velocity else None)
            seeds.append(seed)
            confirmed.append((live, seed))
        for live in self._live:
            if not live.active and id(live) not in matched:
                live.det_scores.append((keyframe, 0.0))
        born = []
        for d, det in enumerate(detections):
            if d in matches or det.score < cfg.birth_score or len(seeds) >= cfg.max_tracks:
                continue
            if not self._duplicate(det, seeds):
                seed, live = self._start_track(det, keyframe)
                live.look = looks[d]
                seeds.append(seed)
                born.append(live)
        return seeds[: cfg.max_tracks], born

    def _check_drift(self, image: np.ndarray) -> None:
        """Tracks whose tracked box on this keyframe no longer looks like them (`drift_similarity`) are
        cut back to their last confirmed frame and lost."""
        limit = self.config.drift_similarity
        if not limit:
            return
        weight = self.config.look_size_weight
        for live in self._live:
            if live.active and live.pending is not None and live.look is not None and \
                    look_similarity(appearance(image, live.pending), live.look, weight) < limit:
                self.stats["drifted"] += 1
                removed = live.cut_back()
                self.stats["frames_dropped"] += removed
                live.missed += removed
                self._suspend(live, drop=True)

    def _unconfirmed(self, live: LiveTrack) -> bool:
        """Whether the track's position on this keyframe has no recent detection behind it."""
        return not live.active or live.unconfirmed > 0 or live.confirmations < 2

    def _associate(self, detections: list[Detection], looks: list[Look],
                   keyframe: int) -> tuple[dict[int, LiveTrack], dict[int, bool]]:
        """Hungarian matching on the better of tracker-box and motion-guess IoU, less the label penalty
        (or zeroed across label groups when class-aware), zeroed where a track that is not confirmed
        right now looks unlike the detection (`match_similarity`); {detection: track} and whether the
        match held through the tracker's own box."""
        if not detections or not self._live:
            return {}, {}
        optimize = require("scipy.optimize", "annotate")
        cfg = self.config
        boxes = np.array([d.box_xyxy for d in detections])
        guesses = [live.predicted_box(keyframe, cfg.lost_growth, confirmed) for confirmed in (False, True)
                   for live in self._live]
        motion = box_iou(boxes, guesses).reshape(len(boxes), 2, len(self._live)).max(axis=1)
        pending = np.array([live.pending if live.active and live.pending is not None else (0, 0, 0, 0)
                            for live in self._live])
        tracker = box_iou(boxes, pending)
        score = np.maximum(motion, tracker)
        same = np.array([[self._label(d.phrase) == self._track_label(live) for live in self._live]
                         for d in detections])
        score = np.where(same, score, 0.0 if cfg.class_aware else score - cfg.label_penalty)
        if cfg.match_similarity:
            for c, live in enumerate(self._live):
                if live.look is not None and self._unconfirmed(live):
                    alike = np.array([look_similarity(look, live.look, cfg.look_size_weight)
                                      for look in looks])
                    score[:, c] = np.where(alike >= cfg.match_similarity, score[:, c], 0.0)
        # Pairs below the threshold cannot match, so they must not steer the assignment either.
        rows, cols = optimize.linear_sum_assignment(-np.where(score >= cfg.match_iou, score, 0.0))
        matches, via = {}, {}
        for r, c in zip(rows, cols, strict=True):
            if score[r, c] >= cfg.match_iou:
                matches[int(r)] = self._live[c]
                via[int(r)] = bool(tracker[r, c] >= cfg.match_iou)
        return matches, via

    def _revive(self, detections: list[Detection], looks: list[Look], matches: dict[int, LiveTrack],
                keyframe: int) -> dict[int, LiveTrack]:
        """Second chance for detections strong enough to start a track that the boxes matched to none: a
        lost track takes one that looks like it (`revive_similarity`) within `revive_distance` of where
        it was last confirmed or is expected; Hungarian on appearance. This re-finds an object that came
        back out of an occlusion or into the frame somewhere its straight-line motion did not predict
        (back-and-forth motion, leaving and re-entering at one edge). Tracks the tracker still follows
        are left out: reviving them onto a detection elsewhere cost more identities than it saved."""
        cfg = self.config
        taken = {id(live) for live in matches.values()}
        tracks = [live for live in self._live if id(live) not in taken and live.look is not None
                  and not live.active]
        free = [d for d in range(len(detections))
                if d not in matches and detections[d].score >= cfg.birth_score]
        if not cfg.revive_similarity or not tracks or not free:
            return {}
        optimize = require("scipy.optimize", "annotate")
        similarity = np.zeros((len(free), len(tracks)))
        for j, live in enumerate(tracks):
            look, last = live.look, np.asarray(live.last_box, float)
            assert look is not None
            size = max(last[2] - last[0], last[3] - last[1], 1e-6)
            anchors = np.array([last, live.predicted_box(keyframe, 0.0, confirmed=True)])
            anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
            for i, d in enumerate(free):
                box = np.asarray(detections[d].box_xyxy, float)
                centre = (box[:2] + box[2:]) / 2
                distance = np.linalg.norm(anchor_centres - centre, axis=1).min() / size
                if distance <= cfg.revive_distance:
                    similarity[i, j] = look_similarity(looks[d], look, cfg.look_size_weight)
        rows, cols = optimize.linear_sum_assignment(-np.where(similarity >= cfg.revive_similarity,
                                                              similarity, 0.0))
        revived = {free[r]: tracks[c] for r, c in zip(rows, cols, strict=True)
                   if similarity[r, c] >= cfg.revive_similarity}
        self.stats["revived"] += len(revived)
        return revived

    def _confirm(self, live: LiveTrack, det: Detection, keyframe: int, via_tracker: bool) -> None:
        """A detection matched the track: its tentative frames count unless the tracker, still reporting
        the object, had moved away from it (drift); a tracker that said it had lost the object kept them.
        A detection too weak to start a track keeps a new track alive but is not its second confirmation:
        two false positives in a row must not make a track."""
        weak = det.score < self.config.birth_score and live.confirmations < 2
        if not via_tracker and live.active:
            self._drop(live)
        elif not weak:
            self._commit(live)
        live.active, live.unconfirmed, live.det_score = True, 0, det.score
        live.last_box, live.last_seen = det.box_xyxy, keyframe
        live.confirmations += 0 if weak else 1
        live.det_scores.append((keyframe, det.score))
        live.frame_scores[keyframe] = det.score
        live.votes[det.phrase] = live.votes.get(det.phrase, 0.0) + det.score

    def _suspend(self, live: LiveTrack, drop: bool) -> None:
        """Stop propagating a track: lost from now on, its unconfirmed frames dropped when `drop`."""
        if drop:
            self._drop(live)
        live.active, live.pending, live.pending_mask = False, None, None

    def _commit(self, live: LiveTrack, until_score: float | None = None) -> None:
        """Tentative frames become part of the trajectory (`until_score`: up to the first frame the
        tracker scored lower; the rest are dropped)."""
        frames = sorted(live.tentative, key=lambda f: f.index)
        weak = [k for k, f in enumerate(frames) if until_score is not None and f.tracker_score < until_score]
        kept = frames[:weak[0]] if weak else frames
        self.stats["frames_dropped"] += len(frames) - len(kept)
        for frame in kept:
            live.append(frame, self.config.keep_masks)
        live.tentative = []

    def _drop(self, live: LiveTrack) -> None:
        self.stats["frames_dropped"] += len(live.tentative)
        live.missed += len(live.tentative)
        live.tentative = []

    def _overlap(self, box: Box, mask: np.ndarray | None, other_box: Box,
                 other_mask: np.ndarray | None) -> float:
        """Mask IoU when both masks are known, else box IoU."""
        if mask is not None and other_mask is not None and mask.shape == other_mask.shape:
            union = np.logical_or(mask, other_mask).sum()
            return float(np.logical_and(mask, other_mask).sum() / union) if union else 0.0
        return float(box_iou(np.asarray(box), np.asarray(other_box))[0, 0])

    def _duplicate(self, detection: Detection, seeds: list[TrackSeed]) -> bool:
        """The detection repeats a prompt: of its label group above duplicate_iou, of another above
        cross_label_duplicate_iou (a different kind of object may overlap, e.g. a rider and a horse)."""
        if not seeds:
            return False
        overlap = box_iou(np.array([detection.box_xyxy]), np.array([s.box_xyxy for s in seeds]))[0]
        label = self._label(detection.phrase)
        limits = [self.config.duplicate_iou if self._label(s.phrase) == label
                  else self.config.cross_label_duplicate_iou for s in seeds]
        return bool(np.any(overlap >= np.array(limits)))

    def _start_track(self, detection: Detection, keyframe: int) -> tuple[TrackSeed, LiveTrack]:
        trajectory = Trajectory(frame_index=[], box=[], space=FrameSpace.SAMPLED)
        instance = Instance(self._next_id, detection.phrase, caption="", trajectory=trajectory)
        self._next_id += 1
        self.stats["tracks_started"] += 1
        live = LiveTrack(instance, detection.box_xyxy, keyframe, det_score=detection.score,
                          confirmations=1, det_scores=[(keyframe, detection.score)],
                          frame_scores={keyframe: detection.score})
        live.votes[detection.phrase] = detection.score
        self._live.append(live)
        return TrackSeed(instance.instance_id, detection.box_xyxy, detection.phrase, detection.score), live

    def _backfill(self, born: list[LiveTrack], seeds: list[TrackSeed], keyframe: int) -> None:
        """Track objects born on this keyframe backwards through the previous window (tentative frames)."""
        ids = {live.instance.instance_id for live in born}
        backwards = np.stack(self._previous[::-1])  # keyframe first
        tracked = self.tracker.track(backwards, [s for s in seeds if s.obj_id in ids])
        for offset, frame in enumerate(tracked[1:], start=1):
            for live in born:
                obj = frame.objects.get(live.instance.instance_id)
                if obj is not None and obj.box_xyxy is not None and obj.score >= self.config.min_score:
                    live.tentative.append(self._frame(keyframe - offset, obj))
                    self.stats["backfilled"] += 1

    def _frame(self, index: int, obj: TrackedObject) -> TrackFrame:
        assert obj.box_xyxy is not None
        mask = obj.mask if self.config.keep_masks or obj.mask is not None else None
        return TrackFrame(index, as_box(clip_boxes([obj.box_xyxy])[0]), float(obj.score), mask)

    def _record(self, sampled_index: int, frame: TrackedFrame) -> None:
        for live in self._live:
            obj = frame.objects.get(live.instance.instance_id) if live.active else None
            if obj is None or obj.box_xyxy is None or obj.score < self.config.min_score:
                live.missed += 1
                continue
            live.tentative.append(self._frame(sampled_index, obj))
            live.missed = 0
        for live in self._live:  # a track confirmed on this window's keyframe commits as it goes
            if live.active and live.unconfirmed == 0 and live.confirmations >= 2:
                self._commit(live)

    def _set_pending(self, frame: TrackedFrame) -> None:
        for live in self._live:
            obj = frame.objects.get(live.instance.instance_id) if live.active else None
            ok = obj is not None and obj.box_xyxy is not None and obj.score >= self.config.min_score
            live.pending = as_box(clip_boxes([obj.box_xyxy])[0]) if ok and obj and obj.box_xyxy else None
            live.pending_mask = obj.mask if ok and obj is not None else None

    def _end_lost_tracks(self) -> None:
        ended = [live for live in self._live if not live.active and live.missed > self.config.max_missed]
        self._done += ended
        self._live = [live for live in self._live if live not in ended]

    def _finish(self, num_frames: int, store: Sequence[int] | None) -> list[Instance]:
        """Settle tentative frames; stitch, drop short and tiny tracks; score, store and renumber the rest."""
        cfg = self.config
        for live in self._live:  # the clip ended before the next confirmation could come
            born_last = live.det_scores[0][0] == self._last_keyframe  # (an image's tracks, too)
            if live.active and (live.confirmations >= 2 or born_last) \
                    and live.unconfirmed < self.config.max_unconfirmed:
                self._commit(live, until_score=self.config.end_score)
        tracks = []
        finished = self._done + self._live
        if cfg.stitch_similarity:
            finished, self.stats["stitched"] = stitch(finished, cfg.stitch_similarity, cfg.revive_distance,
                                                      cfg.stitch_gap, cfg.look_size_weight)
        for live in finished:
            instance = live.instance
            if live.votes:
                instance.phrase = max(live.votes, key=live.votes.__getitem__)
            if instance.trajectory.frame_index:
                instance.score = live.keyframe_score(self.config.redetect_every)
            if store is not None:
                instance.trajectory = instance.trajectory.at_stored(store)
            tracks.append(instance)
        min_frames = min(self.config.min_frames, num_frames if store is None else len(store))
        kept = [t for t in tracks if len(t.trajectory.frame_index) >= max(min_frames, 1)
                and t.trajectory.mean_area() >= self.config.min_area]
        self.stats["tracks_dropped"] = len(tracks) - len(kept)
        kept.sort(key=lambda t: (t.trajectory.frame_index[0], t.instance_id))
        for new_id, track in enumerate(kept):
            track.instance_id = new_id
        log.debug("trajectories: %s", self.stats)
        return kept
