"""Tracker backends: tiny random SAM2 (transformers), the deterministic fakes, and the sam2 package glue."""

import numpy as np
import pytest
from pydantic import TypeAdapter

from instvl.annotate.track import FakeTracker, HFTracker, SAM2Tracker, TrackerConfig, mask_to_box
from instvl.annotate.track.base import box_mask
from instvl.annotate.track.sam2 import decode_propagation, seed_box_pixels, write_jpeg_folder
from instvl.annotate.tracks import TrackSeed
from instvl.deps import MissingDependencyError, is_available
from instvl.testing.components import require_component
from instvl.testing.media import moving_square


def test_mask_to_box_uses_pixel_edges():
    mask = np.zeros((10, 20), bool)
    assert mask_to_box(mask) is None
    mask[2:5, 4:6] = True
    assert mask_to_box(mask) == pytest.approx((0.2, 0.2, 0.3, 0.5))
    assert mask_to_box(box_mask((0.2, 0.2, 0.3, 0.5), 20, 10)) == pytest.approx((0.2, 0.2, 0.3, 0.5))


def test_hf_tiny_random_tracks_two_objects():
    frames, boxes = moving_square(8)
    tracker = HFTracker.Config(tiny_random=True, tiny_image_size=64).build()
    seeds = [TrackSeed(3, tuple(boxes[0])), TrackSeed(9, (0.5, 0.1, 0.8, 0.4))]
    out = tracker.track(frames, seeds)
    assert [f.window_index for f in out] == list(range(8))  # numbered within the window
    for frame in out:
        assert set(frame.objects) == {3, 9}
        for obj in frame.objects.values():
            assert obj.mask.shape == (48, 64) and obj.mask.dtype == bool
            assert obj.box_xyxy == (mask_to_box(obj.mask) if obj.mask.any() else None)
            assert 0.0 <= obj.score <= 1.0
    assert tracker.track(frames[:2], []) [0].objects == {}


@pytest.fixture(scope="module")
def tiny_hf_tracker():
    return HFTracker.Config(tiny_random=True, tiny_image_size=64).build()


def test_hf_box_prompt_reaches_the_prompt_encoder_in_model_pixels(tiny_hf_tracker):
    """Random weights cannot show where a box points, so check what SAM2's prompt encoder is given: the
    box as a (top-left, bottom-right) point pair with labels 2, 3, scaled to the 64-px model input, on
    the conditioning frame only; a moved box moves the prompt."""
    frames, _ = moving_square(3)
    seen: list[dict] = []

    def record(module, args, kwargs):
        if kwargs["input_labels"] is not None and (kwargs["input_labels"] >= 2).any():
            seen.append({k: v.clone() for k, v in kwargs.items() if v is not None})

    hook = tiny_hf_tracker.model.prompt_encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for box in [(0.1, 0.2, 0.5, 0.6), (0.5, 0.25, 0.75, 0.9)]:
            tiny_hf_tracker.track(frames, [TrackSeed(3, box)])
    finally:
        hook.remove()
    assert len(seen) == 2
    for prompt, box in zip(seen, [(0.1, 0.2, 0.5, 0.6), (0.5, 0.25, 0.75, 0.9)], strict=True):
        np.testing.assert_allclose(prompt["input_points"].reshape(-1).numpy(), np.array(box) * 64, rtol=1e-6)
        assert prompt["input_labels"].reshape(-1).tolist() == [2, 3]


def test_hf_mask_prompt_is_the_first_frames_mask_and_moves_with_it(tiny_hf_tracker):
    """A seed's mask is SAM2's prompt (its mask input is taken as the conditioning frame's output), so
    whatever the weights, frame 0 returns the prompted mask, and a moved mask moves the output."""
    frames, _ = moving_square(4)
    outputs = []
    for box in [(0.1, 0.1, 0.4, 0.5), (0.55, 0.4, 0.9, 0.9)]:
        prompt = box_mask(box, 64, 48)
        far = (0.0, 0.0, 0.05, 0.05)  # the box must not be what is used
        out = tiny_hf_tracker.track(frames, [TrackSeed(1, far, mask=prompt)])
        mask = out[0].objects[1].mask
        assert (mask & prompt).sum() / (mask | prompt).sum() > 0.9
        outputs.append(mask)
    assert (outputs[0] & outputs[1]).sum() == 0


def test_tracker_input_errors():
    frames, boxes = moving_square(4)
    tracker = FakeTracker()
    with pytest.raises(ValueError, match="duplicate object ids"):
        tracker.track(frames, [TrackSeed(1, tuple(boxes[0])), TrackSeed(1, tuple(boxes[0]))])
    with pytest.raises(ValueError, match="not normalised"):
        tracker.track(frames, [TrackSeed(1, (0, 0, 12, 12))])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        tracker.track(frames.astype(np.float32), [])


def test_fake_template_tracker_follows_a_moving_square():
    frames, boxes = moving_square(12)
    out = FakeTracker().track(frames, [TrackSeed(1, tuple(boxes[0]))])
    tracked = np.array([f.objects[1].box_xyxy for f in out])
    np.testing.assert_allclose(tracked, boxes, atol=1 / 64)


def test_fake_template_tracker_loses_an_occluded_object():
    frames, boxes = moving_square(12)
    frames = frames.copy()
    frames[5:7] = frames[0, 0, 0]  # the square disappears for two frames
    out = FakeTracker().track(frames, [TrackSeed(1, tuple(boxes[0]))])
    visible = [f.objects[1].visible for f in out]
    assert visible == [True] * 5 + [False] * 2 + [True] * 5
    np.testing.assert_allclose(out[-1].objects[1].box_xyxy, boxes[-1], atol=1 / 64)


def test_tracker_config_union_picks_the_backend():
    adapter = TypeAdapter(TrackerConfig)
    assert isinstance(adapter.validate_python({"kind": "fake"}), FakeTracker.Config)
    assert isinstance(adapter.validate_python({"kind": "hf", "tiny_random": True}), HFTracker.Config)
    assert adapter.validate_python({"kind": "sam2"}).config_file == "configs/sam2.1/sam2.1_hiera_t.yaml"


def test_sam2_glue_without_the_package(tmp_path):
    frames, _ = moving_square(3)
    paths = write_jpeg_folder(frames, tmp_path / "frames")
    assert [p.name for p in paths] == ["0.jpg", "1.jpg", "2.jpg"]
    np.testing.assert_allclose(seed_box_pixels(TrackSeed(1, (0.25, 0.5, 0.5, 1.0)), 64, 48), [16, 24, 32, 48])
    logits = np.full((2, 1, 4, 8), -5.0, np.float32)
    logits[0, 0, 1:3, 2:4] = 5.0
    (frame_idx, objects), = decode_propagation(iter([(0, [7, 8], logits)]))
    assert frame_idx == 0 and objects[7].box_xyxy == pytest.approx((0.25, 0.25, 0.5, 0.75))
    assert objects[7].score == pytest.approx(2 / (1 + np.exp(-5.0)) - 1)
    assert objects[8].box_xyxy is None and objects[8].score == 0.0
    (_, unsure), = decode_propagation(iter([(0, [7, 8], logits, [0.0, None])]))
    assert unsure[7].score == 0.0 and unsure[7].box_xyxy is not None  # presence undecided: score 0
    (_, sure), = decode_propagation(iter([(0, [7, 8], logits, [4.0, 4.0])]))
    assert sure[7].score == pytest.approx(2 / (1 + np.exp(-4.0)) - 1) and sure[8].score == 0.0


@pytest.mark.skipif(is_available("sam2"), reason="sam2 is installed")
def test_sam2_missing_package_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"instvl\[sam2\]"):
        SAM2Tracker.Config().build()


def test_sam2_package_tracks_a_box_for_real():
    """The reference SAM2 video predictor (hiera-t, random weights: no checkpoint) through our glue."""
    require_component("sam2", is_available("sam2"), "pip install 'instvl[sam2]'")
    frames, boxes = moving_square(3)
    tracker = SAM2Tracker.Config(keep_masks=True).build()
    out = tracker.track(frames, [TrackSeed(7, tuple(boxes[0]), "square")])
    assert [f.window_index for f in out] == [0, 1, 2]
    for frame in out:
        assert set(frame.objects) == {7}
        obj = frame.objects[7]
        assert obj.mask is None or obj.mask.shape == frames.shape[1:3]
        if obj.box_xyxy is not None:
            x0, y0, x1, y1 = obj.box_xyxy
            assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1


def test_fake_tracker_uses_the_seed_velocity_from_the_first_frame():
    """A small square moving 8 px a frame is beyond the first frame's search radius (half its side, 4 px)
    unless the seed says how it moves (`TrackSeed.velocity`, as the builder's `seed_velocity` passes it)."""
    from instvl.testing.media import paint_boxes

    width, height, side, step = 96, 32, 8, 8
    left = np.array([8 + step * t for t in range(4)], float)
    boxes = np.stack([left / width, np.full(4, 12 / height), (left + side) / width,
                      np.full(4, (12 + side) / height)], axis=1)[:, None]
    frames = paint_boxes(boxes, width, height, [(220, 40, 40)])
    still = FakeTracker().track(frames, [TrackSeed(1, tuple(boxes[0, 0]))])
    moving = FakeTracker().track(frames, [TrackSeed(1, tuple(boxes[0, 0]), velocity=(step / width, 0.0))])
    found = still[1].objects[1].box_xyxy  # at best half on the square, at its search radius's edge
    assert found is None or found != pytest.approx(tuple(boxes[1, 0]), abs=2 / width)
    for t in range(1, 4):
        assert moving[t].objects[1].box_xyxy == pytest.approx(tuple(boxes[t, 0]), abs=1e-6)
