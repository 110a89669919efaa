"""Box prompts drawn with PIL, crops, frame selection and image encoding."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from instvl.annotate.caption import InstanceInfo, PromptConfig, VisualPromptConfig, make_request
from instvl.annotate.caption.openai import chat_messages
from instvl.annotate.caption.visual_prompt import (
    crop_box,
    draw_boxes,
    marked_indices,
    prefix_size,
    render_request,
    subsample_indices,
    to_data_url,
)
from instvl.geometry import instance_colour, to_pixels
from instvl.testing.media import GREY, solid_frames


def test_box_colour_lies_on_all_four_edges_and_not_inside() -> None:
    frame = np.full((100, 200, 3), GREY, np.uint8)
    box = (0.25, 0.3, 0.75, 0.9)
    image = np.asarray(draw_boxes(frame, [(3, box)], labels=False))
    colour = instance_colour(3).rgb
    x0, y0, x1, y1 = to_pixels(box, 200, 100)
    mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
    for x, y in [(x0, mid_y), (x1 - 1, mid_y), (mid_x, y0), (mid_x, y1 - 1)]:  # the outermost box pixels
        assert tuple(image[y, x]) == colour, (x, y)
    assert tuple(image[mid_y, mid_x]) == GREY
    assert tuple(image[5, 5]) == GREY


def test_label_is_drawn_in_the_box_colour_next_to_the_box() -> None:
    frame = np.full((100, 200, 3), GREY, np.uint8)
    plain = np.asarray(draw_boxes(frame, [(0, (0.25, 0.5, 0.75, 0.9))], labels=False))
    labelled = np.asarray(draw_boxes(frame, [(0, (0.25, 0.5, 0.75, 0.9))], labels=True))
    above = labelled[30:49, 50:80]
    assert (plain[30:49, 50:80] == GREY).all()
    assert (above == instance_colour(0).rgb).all(axis=-1).mean() > 0.3  # the label's background
    assert (above != instance_colour(0).rgb).any()  # ... with text on it


def test_crop_covers_the_box_plus_margin() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    assert crop_box(frame, (0.25, 0.2, 0.75, 0.6), margin=0.0).size == (100, 40)
    assert crop_box(frame, (0.25, 0.2, 0.75, 0.6), margin=0.1).size == (120, 48)
    assert crop_box(frame, (0.5, 0.5, 0.5, 0.5), margin=0.0).size == (2, 2)  # degenerate boxes still crop


def test_render_request_draws_target_and_others_and_skips_invisible_frames() -> None:
    target = InstanceInfo(1, "ball", [None, (0.1, 0.1, 0.4, 0.5), (0.2, 0.1, 0.5, 0.5), None])
    other = InstanceInfo(2, "dog", [(0.6, 0.5, 0.9, 0.9)] * 4)
    request = make_request("instance", solid_frames(4, 200, 100), None, target, [other])
    images = render_request(request)
    assert len(images) == 2
    pixels = np.asarray(images[0])
    assert (pixels == instance_colour(1).rgb).all(axis=-1).any()
    assert (pixels == instance_colour(2).rgb).all(axis=-1).any()
    alone = make_request("instance", solid_frames(4, 200, 100),
                         PromptConfig(visual=VisualPromptConfig(draw_others=False)), target, [other])
    assert not (np.asarray(render_request(alone)[0]) == instance_colour(2).rgb).all(axis=-1).any()


def test_render_request_in_crop_mode_sends_the_instance_region() -> None:
    target = InstanceInfo(0, "ball", [(0.0, 0.0, 0.5, 0.5)] * 4)
    crops = PromptConfig(visual=VisualPromptConfig(mode="crops", crop_margin=0.0))
    images = render_request(make_request("instance", solid_frames(4, 200, 100), crops, target))
    assert [im.size for im in images] == [(100, 50)] * 4


def test_render_request_limits_image_count_and_size() -> None:
    prompts = PromptConfig(visual=VisualPromptConfig(max_images=3, max_side=50))
    images = render_request(make_request("global", solid_frames(9, 200, 100), prompts))
    assert [im.size for im in images] == [(50, 25)] * 3
    assert subsample_indices(9, 3) == [0, 4, 8]
    assert subsample_indices(2, 5) == [0, 1]


def test_instance_without_any_box_and_bad_frames_are_errors() -> None:
    hidden = InstanceInfo(7, "ghost", [None] * 4)
    with pytest.raises(ValueError, match="instance 7 .*no box on any frame"):
        render_request(make_request("instance", solid_frames(4, 200, 100), None, hidden))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB arrays, got float64"):
        render_request(make_request("global", [np.zeros((8, 8, 3))]))


def test_data_url_round_trips_the_image() -> None:
    image = Image.fromarray(np.full((10, 12, 3), (10, 200, 30), np.uint8))
    url = to_data_url(image, "png")
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (12, 10) and decoded.getpixel((3, 3)) == (10, 200, 30)


def clip_requests(prompts: PromptConfig) -> list:
    """A clip's global and entities requests and two instance requests."""
    frames = solid_frames(6, 200, 100)
    cup = InstanceInfo(1, "cup", [(0.1, 0.1, 0.4, 0.5), None, (0.2, 0.1, 0.5, 0.5), None, None, None])
    dog = InstanceInfo(2, "dog", [(0.6, 0.5, 0.9, 0.9)] * 6)
    return [make_request("global", frames, prompts), make_request("entities", frames, prompts),
            make_request("instance", frames, prompts, cup, [dog]),
            make_request("instance", frames, prompts, dog, [cup])]


def test_prefix_mode_opens_every_request_of_a_clip_with_the_same_clean_frames() -> None:
    prompts = PromptConfig(visual=VisualPromptConfig(mode="prefix", max_images=4, marked_frames=1))
    requests = clip_requests(prompts)
    images = [render_request(r) for r in requests]
    assert [len(i) for i in images] == [3, 3, 4, 4]  # 3 shared frames (+ 1 marked for an instance)
    clean = [np.asarray(im) for im in images[0]]
    for per_request in images:
        assert [np.asarray(im).tobytes() for im in per_request[:3]] == [c.tobytes() for c in clean]
    assert all(not (c == instance_colour(1).rgb).all(axis=-1).any() for c in clean)  # nothing drawn
    for marked, instance_id in [(images[2][3], 1), (images[3][3], 2)]:
        assert (np.asarray(marked) == instance_colour(instance_id).rgb).all(axis=-1).any()
    # The chat messages of every request are equal up to the first per-instance part (an image or the text).
    for image_format in ("pil", "png"):
        messages = [chat_messages(r, i, "Be precise.", image_format)
                    for r, i in zip(requests, images, strict=True)]
        prefixes = [[m[0], m[1]["content"][:3]] for m in messages]
        assert all(p == prefixes[0] for p in prefixes)
        assert len({m[1]["content"][-1]["text"] for m in messages}) == 4  # then each its own prompt
    # In 'boxes' mode each instance request has images of its own, from the first one on.
    boxes = [render_request(r) for r in clip_requests(PromptConfig(visual=VisualPromptConfig(max_images=4)))]
    assert np.asarray(boxes[2][0]).tobytes() != np.asarray(boxes[0][0]).tobytes()


def test_prefix_images_are_rounded_to_the_models_pixel_grid() -> None:
    visual = VisualPromptConfig(mode="prefix", max_side=768)
    assert prefix_size(1920, 1080, visual) == (756, 420)  # 768x432, to the nearest multiples of 28
    assert prefix_size(1280, 720, VisualPromptConfig(mode="prefix", max_side=448)) == (448, 252)
    assert prefix_size(100, 40, VisualPromptConfig(mode="prefix", pixel_multiple=1)) == (100, 40)
    assert prefix_size(10, 10, visual) == (28, 28)  # never below one grid step
    request = clip_requests(PromptConfig(visual=VisualPromptConfig(mode="prefix", max_side=150)))[2]
    sizes = {im.size for im in render_request(request)}
    assert sizes == {prefix_size(200, 100, request.visual)} == {(140, 84)}


def test_marked_frames_are_where_the_instance_is_seen_largest_or_spread() -> None:
    target = InstanceInfo(1, "cup", [None, (0, 0, 0.2, 0.2), (0, 0, 0.9, 0.9), None, (0, 0, 0.5, 0.5)])
    assert marked_indices(target, 1) == [2]
    assert marked_indices(target, 2) == [1, 4] and marked_indices(target, 0) == []


def test_video_requests_show_their_frames_and_go_as_one_video_url() -> None:
    prompts = PromptConfig(visual=VisualPromptConfig(video=True, max_video_frames=5, max_side=50))
    global_request, _, instance_request, _ = clip_requests(prompts)
    frames = render_request(global_request)
    assert [im.size for im in frames] == [(50, 25)] * 5 and global_request.as_video
    (video, text) = chat_messages(global_request, frames)[0]["content"]
    assert video["type"] == "video_url" and text == {"type": "text", "text": global_request.prompt}
    url = video["video_url"]["url"]
    assert url.startswith("data:video/jpeg;base64,") and len(url.split(",")) == 1 + 5
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",")[3])))
    assert decoded.format == "JPEG" and decoded.size == (50, 25)
    with pytest.raises(ValueError, match="video request cannot be sent as PIL images"):
        chat_messages(global_request, frames, image_format="pil")
    assert not instance_request.as_video  # instance requests keep their images
    parts = chat_messages(instance_request, render_request(instance_request))[0]["content"]
    assert {part["type"] for part in parts} == {"image_url", "text"}
