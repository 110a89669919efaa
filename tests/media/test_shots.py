"""Shot detection: hard cuts found to the frame, no false cuts on steady motion, scores match OpenCV HSV."""

import numpy as np
import pytest

from instvl.media.fetch import MediaError
from instvl.media.shots import ShotConfig, cuts_to_shots, detect_shots, find_cuts, rgb_to_hsv

FPS = 8.0


@pytest.mark.parametrize(("cut_at", "seed"), [(13, 0), (27, 1), (20, 2)])
def test_hard_cut_is_found_within_one_frame(make_video, cut_at, seed):
    path, _ = make_video(num_frames=40, cut_at=cut_at, seed=seed)
    shots = detect_shots(str(path), str(path), FPS, ShotConfig())
    assert len(shots) == 2
    assert abs(shots[1][0] - cut_at) <= 1
    assert shots[0][0] == 0 and shots[-1][1] == 40 and shots[0][1] == shots[1][0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_smooth_moving_square_has_no_cut(make_video, seed):
    path, _ = make_video(num_frames=40, seed=seed)
    assert detect_shots(str(path), str(path), FPS, ShotConfig()) == [(0, 40)]


def test_detection_from_bytes_matches_path(make_video):
    path, _ = make_video(num_frames=32, cut_at=16)
    from_path = detect_shots(str(path), "clip", FPS, ShotConfig())
    assert detect_shots(path.read_bytes(), "clip", FPS, ShotConfig()) == from_path


def test_scenedetect_backend_agrees(make_video):
    pytest.importorskip("scenedetect")
    path, _ = make_video(num_frames=40, cut_at=22, seed=4)
    numpy_shots = detect_shots(str(path), str(path), FPS, ShotConfig())
    assert detect_shots(str(path), str(path), FPS, ShotConfig(backend="scenedetect")) == numpy_shots


def test_adaptive_rule_ignores_steady_high_motion_and_flashes():
    cfg = ShotConfig(min_shot_s=1.0)
    steady = np.full(30, 40.0, np.float32)  # fast but steady motion: large scores, ratio ~1
    assert find_cuts(steady, cfg, FPS) == []
    spikes = np.full(40, 1.0, np.float32)
    spikes[[10, 13, 30]] = 80.0  # 13 is 3 frames after 10: a flash, closer than min_shot_s (8 frames)
    assert find_cuts(spikes, cfg, FPS) == [10, 30]


def test_small_jumps_below_min_content_val_never_cut():
    scores = np.full(30, 0.05, np.float32)
    scores[15] = 5.0  # 100x its neighbours, but only codec noise in absolute terms
    assert find_cuts(scores, ShotConfig(), FPS) == []


def test_cuts_to_shots_covers_the_video():
    assert cuts_to_shots([5, 12], 20) == [(0, 5), (5, 12), (12, 20)]
    assert cuts_to_shots([], 7) == [(0, 7)]


def test_hsv_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ours = rgb_to_hsv(rgb)
    theirs = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hue_gap = np.abs(ours[..., 0] - theirs[..., 0])
    assert np.minimum(hue_gap, 180 - hue_gap).max() <= 1.0
    assert np.abs(ours[..., 1:] - theirs[..., 1:]).max() <= 1.0


def test_undecodable_video_raises_media_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(MediaError, match="bad.mp4"):
        detect_shots(str(bad), str(bad), FPS, ShotConfig())
