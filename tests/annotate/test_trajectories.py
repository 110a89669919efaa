"""The trajectory builder: identity stability through occlusion and re-detection, pruning, bounded memory."""

from collections.abc import Iterator

import numpy as np
import pytest
from tests.annotate.scenes import crossing_scene

from instvl.annotate.detect import FakeDetector
from instvl.annotate.detect.base import box_iou
from instvl.annotate.track import FakeTracker, HFTracker
from instvl.annotate.trajectories import TrajectoryConfig, decode_rle, encode_rle
from instvl.annotate.types import Track
from instvl.datasets.records import Sample


@pytest.fixture
def make_builder():
    """Factory: a builder with an oracle detector on a scene's ground truth and a given tracker."""

    def make(gt: np.ndarray, phrases: list[str], tracker=None, **config):
        detector = FakeDetector(FakeDetector.Config(mode="oracle"))
        detector.set_ground_truth(gt, phrases)
        return TrajectoryConfig(**config).build(detector, tracker or FakeTracker())

    return make


def ground_truth_ids(track: Track, gt: np.ndarray) -> list[int]:
    """For each frame of a track, the ground-truth object it overlaps most (-1 when none overlaps)."""
    ids = []
    for frame, box in zip(track.frame_index, track.boxes, strict=True):
        iou = box_iou(np.array([box]), np.nan_to_num(gt[frame], nan=-1.0))[0]
        ids.append(int(iou.argmax()) if iou.max() > 0.3 else -1)
    return ids


def id_switches(tracks: list[Track], gt: np.ndarray) -> int:
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
    builder = make_builder(gt, phrases, redetect_every=redetect_every)
    tracks = builder.build(iter(frames), phrases)
    assert [t.phrase for t in tracks] == phrases
    assert [t.track_id for t in tracks] == [0, 1, 2]
    assert id_switches(tracks, gt) == 0
    red = tracks[0]
    assert red.frame_index[0] == 0 and red.frame_index[-1] > occluded.max()  # the same id after occlusion
    assert not set(red.frame_index) & set(occluded.tolist())
    assert all(t.frame_index == sorted(set(t.frame_index)) for t in tracks)


def test_ids_stay_stable_without_class_labels(make_builder):
    frames, gt, phrases = crossing_scene()
    same = ["square"] * len(phrases)
    builder = make_builder(gt, same, redetect_every=4)
    tracks = builder.build(frames, same)
    assert len(tracks) == 3 and id_switches(tracks, gt) == 0


def test_short_and_tiny_tracks_are_dropped(make_builder):
    frames, gt, phrases = crossing_scene(flash=(8, 9))
    tracks = make_builder(gt, phrases, redetect_every=4, min_frames=3).build(frames, phrases)
    assert "yellow square" not in [t.phrase for t in tracks]
    kept = make_builder(gt, phrases, redetect_every=4, min_frames=2).build(frames, phrases)
    yellow = [t for t in kept if t.phrase == "yellow square"]
    assert len(yellow) == 1 and yellow[0].frame_index == [8, 9]
    assert make_builder(gt, phrases, redetect_every=4, min_area=0.5).build(frames, phrases) == []


def test_a_vanished_object_ends_its_track(make_builder):
    frames, gt, phrases = crossing_scene()
    frames, gt = frames.copy(), gt.copy()
    frames[10:, :24, 66:] = 90  # the green square leaves for good at frame 10
    gt[10:, 2] = np.nan
    tracks = make_builder(gt, phrases, redetect_every=4, max_missed=8).build(frames, phrases)
    green = [t for t in tracks if t.phrase == "green square"]
    assert len(green) == 1 and green[0].frame_index == list(range(10))
    assert len(tracks) == 3 and id_switches(tracks, gt) == 0


def test_a_long_occlusion_beyond_max_missed_starts_a_new_track(make_builder):
    frames, gt, phrases = crossing_scene()
    builder = make_builder(gt, phrases, redetect_every=4, max_missed=2)
    tracks = builder.build(frames, phrases)
    red = [t for t in tracks if t.phrase == "red square"]
    assert len(red) == 2 and red[0].frame_index[-1] < red[1].frame_index[0]
    assert [t.track_id for t in tracks] == list(range(4))
    assert builder.stats["tracks_started"] == 4


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

    def track(self, frames, seeds, *, frame_indices=None):
        self.calls.append((len(frames), list(frame_indices), self.stream.pulled))
        return super().track(frames, seeds, frame_indices=frame_indices)


def test_frames_are_streamed_in_bounded_windows(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=30)
    stream = CountingFrames(frames)
    tracker = RecordingTracker(stream)
    make_builder(gt, phrases, tracker=tracker, redetect_every=4).build(stream, phrases)
    assert max(n for n, _, _ in tracker.calls) == 5
    for n, indices, pulled in tracker.calls:
        assert indices == list(range(indices[0], indices[0] + n))
        assert pulled - indices[0] <= 5  # never read further ahead than one window
    starts = [indices[0] for _, indices, _ in tracker.calls]
    assert starts == list(range(0, 30, 4))


def test_masks_are_stored_as_coco_rle_and_rows_round_trip(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=12)
    tracks = make_builder(gt, phrases, redetect_every=4, keep_masks=True).build(frames, phrases)
    height, width = frames.shape[1:3]
    for track in tracks:
        assert len(track.mask_rle) == track.num_frames and all(isinstance(m, str) for m in track.mask_rle)
        mask = decode_rle(track.mask_rle[0], height, width)
        assert mask.shape == (height, width) and mask.sum() == pytest.approx(track.mean_area * height * width, rel=0.2)
    sample = Sample("s0", "video", width, height, len(frames), "three squares",
                    instances=[t.to_instance(f"the {t.phrase}") for t in tracks])
    back = Sample.from_row(sample.to_row())
    assert [i.instance_id for i in back.instances] == [0, 1, 2]
    assert back.instances[1].trajectory.mask_rle == tracks[1].mask_rle
    assert back.instances[0].score == pytest.approx(tracks[0].mean_score)


def test_rle_round_trip():
    mask = np.zeros((7, 9), bool)
    mask[1:4, 2:8] = True
    assert (decode_rle(encode_rle(mask), 7, 9) == mask).all()


def test_single_frame_and_empty_inputs(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=4)
    tracks = make_builder(gt, phrases, min_frames=1).build(frames[:1], phrases)
    assert [t.frame_index for t in tracks] == [[0], [0], [0]]
    assert make_builder(gt, phrases).build(iter([]), phrases) == []
    with pytest.raises(ValueError, match="redetect_every"):
        make_builder(gt, phrases, redetect_every=0)


def test_builder_runs_with_the_tiny_sam2_tracker(make_builder):
    frames, gt, phrases = crossing_scene(num_frames=9)
    tracker = HFTracker.Config(tiny_random=True, tiny_image_size=64).build()
    builder = make_builder(gt, phrases, tracker=tracker, redetect_every=4, min_frames=1, min_area=0.0,
                           keep_masks=True)
    tracks = builder.build(frames, phrases)
    assert builder.stats["windows"] == 3 and tracks
    for track in tracks:
        assert track.frame_index == sorted(set(track.frame_index)) and set(track.frame_index) <= set(range(9))
        assert len(track.mask_rle) == track.num_frames == len(track.scores)
        boxes = track.boxes_array()
        assert boxes.min() >= 0 and boxes.max() <= 1
