"""Box geometry and instance colours: the one rounding rule, IoU edge cases, box_at modes, one palette."""

import re

import numpy as np
import pytest

from instvl.geometry import (
    PALETTE,
    as_box,
    box_area,
    box_at,
    box_iou,
    boxes_at,
    clip_boxes,
    cxcywh_to_xyxy,
    grow_box,
    instance_colour,
    instance_hex,
    label_text_colour,
    to_pixels,
)


def test_as_box_and_area() -> None:
    assert as_box(np.array([[1, 2, 3, 4]])) == (1.0, 2.0, 3.0, 4.0)
    assert box_area((0.1, 0.2, 0.5, 0.7)) == pytest.approx(0.2)
    assert box_area((0.5, 0.5, 0.4, 0.9)) == 0.0  # inverted: degenerate


def test_clip_and_convert() -> None:
    np.testing.assert_allclose(clip_boxes([[0.8, -0.1, 0.2, 1.5]]), [[0.2, 0.0, 0.8, 1.0]])
    np.testing.assert_allclose(cxcywh_to_xyxy([[0.5, 0.5, 0.2, 0.4]]), [[0.4, 0.3, 0.6, 0.7]])
    assert cxcywh_to_xyxy(np.zeros((3, 5, 4))).shape == (3, 5, 4)  # any leading shape
    assert grow_box((0.2, 0.2, 0.6, 0.4), 0.5) == pytest.approx((0.0, 0.1, 0.8, 0.5))


def test_to_pixels_covers_the_touched_pixels_end_exclusive() -> None:
    assert to_pixels((0.25, 0.5, 0.75, 1.0), 200, 100) == (50, 50, 150, 100)  # whole pixels: exact
    assert to_pixels((0.101, 0.0, 0.299, 0.5), 100, 10) == (10, 0, 30, 5)  # partly covered pixels count
    assert to_pixels((17 / 96, 0.0, 1.0, 1.0), 96, 64) == (17, 0, 96, 64)


def test_to_pixels_keeps_float32_pixel_edges_exact_on_large_frames() -> None:
    edge = np.float32(1237 / 3840)  # a pixel edge stored as float32 lies ~2e-4 px off
    assert to_pixels((edge, 0.0, edge + np.float32(100 / 3840), 1.0), 3840, 2160)[::2] == (1237, 1337)


def test_to_pixels_clips_and_keeps_at_least_one_pixel() -> None:
    assert to_pixels((-0.5, -1.0, 1.5, 2.0), 40, 30) == (0, 0, 40, 30)
    assert to_pixels((0.5, 0.5, 0.5, 0.5), 40, 30) == (20, 15, 21, 16)  # a point: one pixel
    assert to_pixels((1.0, 1.0, 1.0, 1.0), 40, 30) == (39, 29, 40, 30)  # on the far edge: the last pixel
    assert to_pixels((0.6, 0.6, 0.2, 0.2), 10, 10) == (6, 6, 7, 7)  # inverted: one pixel at its start


def test_iou_values_and_edge_cases() -> None:
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [2, 0, 4, 2], [0, 0, 1, 1], [0, 0, 0, 0]])
    # overlap 1/7, identical, disjoint, touching edges, contained (1/4), empty box
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 7, 1.0, 0.0, 0.0, 0.25, 0.0])
    assert box_iou([0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5])[0, 0] == 0.0  # empty union: no match
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)).shape == (1, 1)  # single boxes
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 6)
    assert np.allclose(box_iou(b, a), box_iou(a, b).T)  # symmetric


KEYS, BOXES = [2, 6], [[0.0, 0.0, 0.2, 0.2], [0.4, 0.2, 0.6, 0.6]]
FRAMES = [0, 2, 3, 6, 9]


def test_boxes_at_exact_only_on_keyframes() -> None:
    boxes, present = boxes_at(KEYS, BOXES, FRAMES, mode="exact")
    assert present.tolist() == [False, True, False, True, False]
    np.testing.assert_allclose(boxes[[1, 3]], BOXES)
    assert box_at(KEYS, BOXES, 6) == pytest.approx(tuple(BOXES[1]))
    assert box_at(KEYS, BOXES, 3) is None


def test_boxes_at_hold_keeps_the_previous_box_inside_the_span() -> None:
    boxes, present = boxes_at(KEYS, BOXES, FRAMES, mode="hold")
    assert present.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(boxes[2], BOXES[0])
    assert box_at(KEYS, BOXES, 5, mode="hold") == pytest.approx(tuple(BOXES[0]))
    assert box_at(KEYS, BOXES, 7, mode="hold") is None


def test_boxes_at_interpolate_moves_linearly_and_fills_outside_with_the_nearest() -> None:
    boxes, present = boxes_at(KEYS, BOXES, FRAMES, mode="interpolate")
    assert present.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(boxes[2], [0.1, 0.05, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(boxes[0], BOXES[0])  # before the span: the first box (absent)
    np.testing.assert_allclose(boxes[4], BOXES[1])  # after it: the last box (absent)
    assert boxes.dtype == np.float64  # exact boxes stay exact


def test_boxes_at_edge_cases() -> None:
    boxes, present = boxes_at([], [], [0, 1], mode="interpolate")
    assert boxes.shape == (2, 4) and not present.any()  # no keyframes: absent everywhere
    assert box_at([4], [[0, 0, 1, 1]], 4, mode="interpolate") == (0.0, 0.0, 1.0, 1.0)  # one keyframe
    with pytest.raises(ValueError, match="increase strictly"):
        boxes_at([3, 1], [[0, 0, 1, 1]] * 2, [0])
    with pytest.raises(ValueError, match="one box per frame index"):
        boxes_at([1, 2], [[0, 0, 1, 1]], [0])
    with pytest.raises(ValueError, match="unknown box mode"):
        boxes_at(KEYS, BOXES, [0], mode="nearest")  # type: ignore[arg-type]


def test_palette_names_and_colours_are_distinct_and_wrap() -> None:
    assert len({c.name for c in PALETTE}) == len({c.rgb for c in PALETTE}) == len(PALETTE) == 12
    assert instance_colour(13) == instance_colour(1) == ("green", (60, 180, 75))
    assert instance_hex(0) == "#e6194b" and instance_colour(2).name == "blue"
    assert label_text_colour(instance_colour(7).rgb) == (0, 0, 0)  # yellow: black text
    assert label_text_colour(instance_colour(2).rgb) == (255, 255, 255)


@pytest.mark.parametrize("instance_id", [0, 2, 7, 11])
def test_the_prompt_names_the_colour_that_renders_and_the_vlm_image_draw(instance_id: int) -> None:
    from instvl.annotate.caption import InstanceInfo, make_request, render_request
    from instvl.datasets.draw import draw_trajectories
    from instvl.datasets.records import Instance, Trajectory

    box = [0.25, 0.25, 0.75, 0.75]
    frame = np.full((64, 64, 3), 128, np.uint8)
    request = make_request("instance", [frame], instance=InstanceInfo(instance_id, "ball", [box]))
    name = re.search(r"marked by an? (\w+) box", request.prompt).group(1)
    rgb = {c.name: c.rgb for c in PALETTE}[name]

    instance = Instance(instance_id, "ball", "a ball", Trajectory([0], [box]))
    rendered = np.asarray(draw_trajectories(frame, [instance.to_row()], 0, labels=False))
    vlm_image = np.asarray(render_request(request)[0])
    x0, y0, _, y1 = to_pixels(box, 64, 64)
    assert tuple(rendered[(y0 + y1) // 2, x0]) == rgb  # the left edge of the report / render box
    assert tuple(vlm_image[(y0 + y1) // 2, x0]) == rgb  # ... and of the box the VLM is shown
