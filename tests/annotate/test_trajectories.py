"""The trajectory builder: identity stability through occlusion and re-detection, pruning, bounded memory."""

from collections.abc import Iterator

import numpy as np
import pytest

from instvl.annotate.track import FakeTracker, HFTracker
from instvl.annotate.trajectories import TrajectoryConfig
from instvl.datasets.records import FrameSpace, Instance, Sample, decode_rle, encode_rle
from instvl.geometry import box_iou
from instvl.testing.media import crossing_scene, paint_boxes
from instvl.testing.oracle import OracleDetector, OracleTracker


@pytest.fixture
def make_builder():
    """Factory: a builder with an oracle detector on a scene's ground truth and a given tracker."""

    def make(frames: np.ndarray, gt: np.ndarray, phrases: list[str], tracker=None, **config):
        detector = OracleDetector(frames, gt, phrases)
        return TrajectoryConfig(**config).build(detector, tracker or FakeTracker())

    return make


def ground_truth_ids(track: Instance, gt: np.ndarray) -> list[int]:
    """For each frame of a track, the ground-truth object it overlaps most (-1 when none overlaps)."""
    ids = []
    for frame, box in zip(track.trajectory.frame_index, track.trajectory.box, strict=True):
        iou = box_iou(np.array([box]), np.nan_to_num(gt[frame], nan=-1.0))[0]
        ids.append(int(iou.argmax()) if iou.max() > 0.3 else -1)
    return ids


def id_switches(tracks: list[Instance], gt: np.ndarray) -> int:
    """Changes of the underlying ground-truth object along each track, plus extra tracks per object."""
    switches, owners = 0, []
    for track in tracks:
        ids = ground_truth_ids(track, gt)
        switches += sum(a != b for a, b in zip(ids, ids[1:], strict=False))
        owners.append(max(set(ids), key=ids.count))
    return switches + len(owners) - len(set(owners))


@pytest.mark.parametrize("redetect_every", [3, 4, 8])
def test_ids_stay_stable_through_crossing_and_occlusion(make_builder, redetect_every):
    frames, gt, phrases = crossing_scene()
    occluded = np.flatnonzero(np.isnan(gt[:, 0, 0]))
    assert len(occluded) >= 2, "the red square must be hidden behind the blue one for a while"
    builder = make_builder(frames, gt, phrases, redetect_every=redetect_every)
    tracks = builder.build(iter(frames), phrases)
    assert [t.phrase for t in tracks] == phrases
    assert [t.instance_id for t in tracks] == [0, 1, 2]
    assert id_switches(tracks, gt) == 0
    red = tracks[0]
    red_frames = red.trajectory.frame_index
    assert red_frames[0] == 0 and red_frames[-1] > occluded.max()  # the same id after occlusion
    assert not set(red_frames) & set(occluded.tolist())
    assert all(t.trajectory.frame_index == sorted(set(t.trajectory.frame_index)) for t in tracks)


def test_ids_stay_stable_without_class_labels(make_builder):
    frames, gt, phrases = crossing_scene()
    same = ["square"] * len(phrases)
    builder = make_builder(frames, gt, same, redetect_every=4)
    tracks = builder.build(frames, same)
    assert len(tracks) == 3 and id_switches(tracks, gt) == 0


def test_short_tiny_and_once_detected_tracks_are_dropped(make_builder):
    frames, gt, phrases = crossing_scene(flash=(8, 12))  # detected on keyframes 8 and 12
    tracks = make_builder(frames, gt, phrases, redetect_every=4, min_frames=6).build(frames, phrases)
    assert "yellow square" not in [t.phrase for t in tracks]
    kept = make_builder(frames, gt, phrases, redetect_every=4, min_frames=5).build(frames, phrases)
    yellow = [t for t in kept if t.phrase == "yellow square"]
    assert len(yellow) == 1 and yellow[0].trajectory.frame_index == [8, 9, 10, 11, 12]
    assert make_builder(frames, gt, phrases, redetect_every=4, min_area=0.5).build(frames, phrases) == []
    frames, gt, phrases = crossing_scene(flash=(8, 9))  # one detection never confirmed again: no track
    once = make_builder(frames, gt, phrases, redetect_every=4, min_frames=1).build(frames, phrases)
    assert "yellow square" not in [t.phrase for t in once]


def test_a_vanished_object_ends_its_track(make_builder):
    frames, gt, phrases = crossing_scene()
    frames, gt = frames.copy(), gt.copy()
    frames[10:, :24, 66:] = 90  # the green square leaves for good at frame 10
    gt[10:, 2] = np.nan
    tracks = make_builder(frames, gt, phrases, redetect_every=4, max_missed=8).build(frames, phrases)
    green = [t for t in tracks if t.phrase == "green square"]
    assert len(green) == 1 and green[0].trajectory.frame_index == list(range(10))
    assert len(tracks) == 3 and id_switches(tracks, gt) == 0


def test_a_long_occlusion_beyond_max_missed_starts_a_new_track(make_builder):
    frames, gt, phrases = crossing_scene()
    builder = make_builder(frames, gt, phrases, redetect_every=4, max_missed=2, stitch_similarity=0.0)
    tracks = builder.build(frames, phrases)
    red = [t for t in tracks if t.phrase == "red square"]
    assert len(red) == 2 and red[0].trajectory.frame_index[-1] < red[1].trajectory.frame_index[0]
    assert [t.instance_id for t in tracks] == list(range(4))
    assert builder.stats["tracks_started"] == 4
    # stitching (on by default) joins the two pieces again: one red track with a gap, no ID switch
    stitched = make_builder(frames, gt, phrases, redetect_every=4, max_missed=2).build(frames, phrases)
    red = [t for t in stitched if t.phrase == "red square"]
    assert len(red) == 1 and len(stitched) == 3 and id_switches(stitched, gt) == 0


class CountingFrames:
    """A frame stream that records how many frames have been pulled from it."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.pulled = frames, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.pulled += 1
            yield frame


class RecordingTracker(FakeTracker):
    """The fake tracker, noting window sizes and how far the stream had been read at each call."""

    def __init__(self, stream: CountingFrames):
        super().__init__()
        self.stream, self.calls = stream, []

    def track(self, frames, seeds):
        self.calls.append((len(frames), self.stream.pulled))
        return super().track(frames, seeds)


def test_frames_are_streamed_in_bounded_windows(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=30)
    stream = CountingFrames(frames)
    tracker = RecordingTracker(stream)
    make_builder(frames, gt, phrases, tracker=tracker, redetect_every=4).build(stream, phrases)
    sizes = [n for n, _ in tracker.calls]
    starts = [sum(n - 1 for n in sizes[:k]) for k in range(len(sizes))]  # windows share one frame
    assert max(sizes) == 5 and starts == list(range(0, 30, 4))
    for start, (_, pulled) in zip(starts, tracker.calls, strict=True):
        assert pulled - start <= 5  # never read further ahead than one window


def test_rows_round_trip_and_a_tracker_without_masks_stores_none(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=12)
    tracks = make_builder(frames, gt, phrases, redetect_every=4, keep_masks=True).build(frames, phrases)
    height, width = frames.shape[1:3]
    assert tracks and all(t.trajectory.mask_rle == [] for t in tracks)  # never a box drawn as a mask
    assert all(t.trajectory.space == FrameSpace.SAMPLED for t in tracks)
    with pytest.raises(ValueError, match="clip_frame"):
        tracks[0].trajectory.to_row()  # sampled indices never reach a row unmapped
    clip_frames = range(len(frames))  # every frame sampled: sampled index k is clip frame k
    sample = Sample("s0", "video", width, height, len(frames), "three squares",
                    instances=[Instance(t.instance_id, t.phrase, f"the {t.phrase}",
                                        t.trajectory.to_clip_frames(clip_frames), t.score) for t in tracks])
    back = Sample.from_row(sample.to_row())
    assert [i.instance_id for i in back.instances] == [0, 1, 2]
    assert back.instances[1].trajectory.box == tracks[1].trajectory.box
    assert back.instances[0].score == pytest.approx(tracks[0].score)


def test_rle_round_trip():
    mask = np.zeros((7, 9), bool)
    mask[1:4, 2:8] = True
    assert (decode_rle(encode_rle(mask), 7, 9) == mask).all()


def test_single_frame_and_empty_inputs(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=4)
    tracks = make_builder(frames, gt, phrases, min_frames=1).build(frames[:1], phrases)
    assert [t.trajectory.frame_index for t in tracks] == [[0], [0], [0]]
    assert make_builder(frames, gt, phrases).build(iter([]), phrases) == []
    with pytest.raises(ValueError, match="redetect_every"):
        make_builder(frames, gt, phrases, redetect_every=0)


def test_builder_runs_with_the_tiny_sam2_tracker(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=9)
    tracker = HFTracker.Config(tiny_random=True, tiny_image_size=64).build()
    builder = make_builder(frames, gt, phrases, tracker=tracker, redetect_every=4, min_frames=1, min_area=0.0,
                           keep_masks=True)
    tracks = builder.build(frames, phrases)
    assert builder.stats["windows"] == 3 and tracks
    for track in tracks:
        traj = track.trajectory
        assert traj.frame_index == sorted(set(traj.frame_index)) and set(traj.frame_index) <= set(range(9))
        assert len(traj.mask_rle) == len(traj.frame_index) == len(traj.score)
        boxes = traj.boxes_array()
        assert boxes.min() >= 0 and boxes.max() <= 1


class DriftingTracker(FakeTracker):
    """The template tracker, except that object `victim` slides onto the background from `after` on in
    window number `window` (1: the first)."""

    def __init__(self, victim_box, after: int, window: int = 1):
        super().__init__()
        self.victim_box, self.after, self.window, self.calls = victim_box, after, window, 0

    def track(self, frames, seeds):
        out = super().track(frames, seeds)
        self.calls += 1
        for seed in seeds if self.calls == self.window else []:  # drifts once, in that window
            if box_iou(np.array([seed.box_xyxy]), np.array([self.victim_box]))[0, 0] > 0.3:
                for frame in out[self.after:]:
                    frame.objects[seed.obj_id].box_xyxy = (0.0, 0.7, 0.12, 0.9)  # empty background
        return out


def test_drift_is_cut_back_to_the_confirmed_frames_and_the_id_continues():
    frames, gt, phrases = crossing_scene()
    green = gt[0, 2]  # still at frame 0; the green square drifts down slowly
    tracker = DriftingTracker(green, after=2)
    detector = OracleDetector(frames, gt, phrases)
    builder = TrajectoryConfig(redetect_every=4, max_unconfirmed=1).build(detector, tracker)
    tracks = builder.build(frames, phrases)
    assert id_switches(tracks, gt) == 0 and len(tracks) == 3
    green_track = [t for t in tracks if t.phrase == "green square"][0]
    assert all(i >= 0 for i in ground_truth_ids(green_track, gt))  # no box on the background
    assert builder.stats["frames_dropped"] > 0


@pytest.mark.parametrize(("drift_similarity", "green_tracks"), [(0.75, 1), (0.0, 2)])
def test_a_confirmed_track_that_drifts_onto_what_does_not_look_like_it_is_cut_back(drift_similarity,
                                                                                    green_tracks):
    frames, gt, phrases = crossing_scene()
    green = phrases.index("green square")
    # Confirmed on keyframes 0, 4 and 8, the green square's tracker slides onto the background in the
    # third window (frames 9-11) and the detector misses it on keyframe 12: only its looks tell.
    tracker = DriftingTracker(gt[8, green], after=1, window=3)
    seen = gt.copy()
    seen[12, green] = np.nan
    detector = OracleDetector(frames, seen, phrases)
    builder = TrajectoryConfig(redetect_every=4, drift_similarity=drift_similarity,
                               stitch_similarity=0.0).build(detector, tracker)  # the drift check alone
    tracks = builder.build(frames, phrases)
    found = [t for t in tracks if t.phrase == "green square"]
    # Cut back and lost, the track is revived by the next detection; left alone, it sits on the
    # background until it ends and the square becomes a second track.
    assert len(found) == green_tracks
    assert any(-1 in ground_truth_ids(t, gt) for t in found) == (green_tracks == 2)
    assert builder.stats["drifted"] == (green_tracks == 1)


def test_synonym_labels_keep_one_identity_and_vote_the_phrase():
    frames, gt, phrases = crossing_scene()
    synonyms = {"red square": ["crimson square"], "blue square": ["navy square"]}
    detector = OracleDetector(frames, gt, phrases, synonyms=synonyms, seed=3)
    prompt = phrases + ["crimson square", "navy square"]
    tracks = TrajectoryConfig(redetect_every=4).build(detector, FakeTracker()).build(frames, prompt)
    assert len(tracks) == 3 and id_switches(tracks, gt) == 0
    assert {t.phrase for t in tracks} <= set(prompt)
    grouped = TrajectoryConfig(redetect_every=4, class_aware=True, synonyms=[list(p) for p in [
        ("red square", "crimson square"), ("blue square", "navy square")]]).build(detector, FakeTracker())
    assert len(grouped.build(frames, prompt)) == 3


def test_an_overlapping_object_of_another_kind_is_born():
    frames, gt, phrases = crossing_scene(num_frames=9)
    gt = np.concatenate([gt, gt[:, 1:2] + np.array([0, 0.02, 0, 0.02], np.float32)], axis=1)  # a rider
    labels = phrases + ["rider"]
    detector = OracleDetector(frames, gt, labels)
    builder = TrajectoryConfig(redetect_every=4).build(detector, OracleTracker(frames, gt))
    tracks = builder.build(frames, labels)
    assert sorted(t.phrase for t in tracks) == sorted(labels)


def test_scores_hold_detector_confidence_and_dense_tracking_stores_the_sampled_frames():
    frames, gt, phrases = crossing_scene(num_frames=17)
    detector = OracleDetector(frames, gt, phrases, score=0.8, miss_rate=0.3, seed=1)
    builder = TrajectoryConfig(redetect_every=4).build(detector, OracleTracker(frames, gt))
    tracks = builder.build(frames, phrases)
    for track in tracks:
        traj = track.trajectory
        assert all(0 <= s <= 0.8 + 1e-6 for s in traj.score)
        assert 0 < track.score <= 0.8 + 1e-6
    assert any(t.score < 0.8 - 1e-6 for t in tracks)  # a keyframe the detector missed counts 0
    store = list(range(0, 17, 2))
    stored = TrajectoryConfig(redetect_every=4).build(detector, OracleTracker(frames, gt)).build(
        frames, phrases, store=store)
    for dense, sparse in zip(tracks, stored, strict=True):
        expected = [store.index(f) for f in dense.trajectory.frame_index if f in store]
        assert sparse.trajectory.frame_index == expected


def leave_and_return_scene(num_frames: int = 28) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A red square moving up out of the frame and back down (back-and-forth), a blue one standing by:
    the red one comes back where its straight-line motion does not predict."""
    t = np.arange(num_frames)
    top = 0.45 - 0.06 * np.minimum(t, num_frames - 1 - t)  # up for half the clip, then down again
    red = np.stack([np.full(num_frames, 0.2), top, np.full(num_frames, 0.4), top + 0.25], axis=1)
    blue = np.tile([0.65, 0.55, 0.85, 0.8], (num_frames, 1))
    drawn = np.stack([red, blue], axis=1)
    frames = paint_boxes(np.clip(drawn, 0, 1), 96, 64, [(220, 40, 40), (40, 60, 220)])
    visible = drawn[:, :, 1] >= 0  # ground truth: the red square while wholly inside the frame
    gt = np.where(visible[..., None], drawn, np.nan)
    return frames, gt, ["red square", "blue square"]


@pytest.mark.parametrize(("revive_similarity", "red_tracks"), [(0.8, 1), (0.0, 2)])
def test_an_object_back_from_outside_the_frame_is_revived_by_its_looks(make_builder, revive_similarity,
                                                                       red_tracks):
    frames, gt, phrases = leave_and_return_scene()
    builder = make_builder(frames, gt, phrases, redetect_every=4, max_missed=16,
                           revive_similarity=revive_similarity, stitch_similarity=0.0)  # revival alone
    red = [t for t in builder.build(frames, phrases) if t.phrase == "red square"]
    assert len(red) == red_tracks  # without revival, the returning square is a new track
    assert builder.stats["revived"] == (red_tracks == 1)
    assert all(1 not in ground_truth_ids(t, gt) for t in red)  # never on the blue square


@pytest.mark.parametrize(("stitch_similarity", "red_tracks"), [(0.8, 1), (0.0, 2)])
def test_a_track_that_starts_where_a_lookalike_ended_continues_it(make_builder, stitch_similarity,
                                                                  red_tracks):
    frames, gt, phrases = leave_and_return_scene()
    # Gone longer than the lost track waits (max_missed) and no revival: only stitching joins the two.
    builder = make_builder(frames, gt, phrases, redetect_every=4, max_missed=2, revive_similarity=0.0,
                           stitch_similarity=stitch_similarity)
    tracks = builder.build(frames, phrases)
    red = [t for t in tracks if t.phrase == "red square"]
    assert len(red) == red_tracks and builder.stats["stitched"] == (red_tracks == 1)
    assert all(1 not in ground_truth_ids(t, gt) for t in red)
    frames_of = red[0].trajectory.frame_index
    assert frames_of == sorted(set(frames_of)) and len(red[0].trajectory.score) == len(frames_of)
    assert [t.instance_id for t in tracks] == list(range(len(tracks)))


def leave_and_enter_scene(num_frames: int = 28) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A small red square leaves at the top of the frame and a red square twice its size comes in there
    soon after: the same colour where the first was expected, two objects."""
    t = np.arange(num_frames).astype(float)
    small_top = np.where(t < num_frames // 2, 0.45 - 0.06 * t, np.nan)
    large_top = np.where(t >= num_frames // 2, -0.5 + 0.06 * (t - num_frames // 2 + 4), np.nan)
    side = np.ones(num_frames)
    small = np.stack([0.2 * side, small_top, 0.4 * side, small_top + 0.25], axis=1)
    large = np.stack([0.15 * side, large_top, 0.55 * side, large_top + 0.5], axis=1)
    drawn = np.stack([small, large], axis=1)
    frames = paint_boxes(np.clip(drawn, 0, 1), 96, 64, [(220, 40, 40), (220, 40, 40)])
    gt = np.where((drawn[:, :, 1] >= 0)[..., None], drawn, np.nan)  # while wholly inside the frame
    return frames, gt, ["red square", "red square"]


@pytest.mark.parametrize(("look_size_weight", "tracks_made"), [(0.5, 2), (0.0, 1)])
def test_a_lookalike_of_another_size_does_not_continue_a_track(make_builder, look_size_weight, tracks_made):
    frames, gt, phrases = leave_and_enter_scene()
    builder = make_builder(frames, gt, phrases, redetect_every=4, max_missed=2, revive_similarity=0.0,
                           look_size_weight=look_size_weight)
    tracks = builder.build(frames, phrases)
    # Colours alone cannot tell the two squares apart, so stitching joins them into one identity.
    assert len(tracks) == tracks_made and builder.stats["stitched"] == (tracks_made == 1)
    assert id_switches(tracks, gt) == (tracks_made == 1)
