"""Prompt templates from package data, request rendering, validation and cache keys."""

from pathlib import Path

import pytest

from instvl.annotate.caption import (
    CaptionRequest,
    InstanceInfo,
    PromptConfig,
    VisualPromptConfig,
    load_template,
    make_request,
    request_key,
)
from instvl.annotate.caption.prompting import package_prompt_names
from instvl.datasets.records import FrameSpace, Instance, Trajectory
from instvl.testing.media import noise_frames


def moving(instance_id: int, phrase: str, count: int = 4) -> InstanceInfo:
    return InstanceInfo(instance_id, phrase, [(0.1 * t, 0.2, 0.1 * t + 0.3, 0.6) for t in range(count)])


def test_package_prompts_ship_with_the_package() -> None:
    assert {"global", "instance", "entities"} <= set(package_prompt_names())
    for name in ("global", "instance", "entities"):
        assert "$media" in load_template(name).template


def test_template_can_be_a_user_file(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("Describe $phrase {JSON braces stay} in $max_words words.")
    prompts = PromptConfig(instance_template=str(path), max_words=12)
    request = make_request("instance", noise_frames(4, 32, 24), prompts, moving(3, "cat"))
    assert request.prompt == "Describe cat {JSON braces stay} in 12 words."


def test_unknown_template_and_bad_placeholder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-prompt.*package prompts: entities, global"):
        load_template("no-such-prompt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Describe $phrase.")
    with pytest.raises(ValueError, match=r"bad.txt.*\(global\) has a bad placeholder 'phrase'"):
        make_request("global", noise_frames(4, 32, 24), PromptConfig(global_template=str(bad)))


def test_instance_prompt_names_the_box_colour_and_the_others() -> None:
    target, other = moving(1, "ball"), moving(2, "dog")
    request = make_request("instance", noise_frames(4, 32, 24), None, target, [target, other])
    assert 'marked by a green box labelled "ID: 1"' in request.prompt
    assert 'ID: 2 ("dog", blue box)' in request.prompt
    assert [o.instance_id for o in request.others] == [2]  # the target is not its own neighbour
    crops = PromptConfig(visual=VisualPromptConfig(mode="crops"))
    cropped = make_request("instance", noise_frames(4, 32, 24), crops, target, [other])
    assert "close-up crop" in cropped.prompt and "blue box" not in cropped.prompt


def test_prompt_counts_the_images_actually_sent() -> None:
    prompts = PromptConfig(visual=VisualPromptConfig(max_images=3))
    assert "3 frames sampled" in make_request("global", noise_frames(10, 32, 24), prompts).prompt
    assert "an image" in make_request("global", noise_frames(1, 32, 24), prompts).prompt


def test_requests_are_validated() -> None:
    with pytest.raises(ValueError, match="4 boxes for 3 frames"):
        make_request("instance", noise_frames(3, 32, 24), None, moving(1, "ball", count=4))
    with pytest.raises(ValueError, match="needs `instance`"):
        CaptionRequest("instance", noise_frames(4, 32, 24), "p")
    with pytest.raises(ValueError, match="unknown caption request kind 'story'"):
        CaptionRequest("story", noise_frames(4, 32, 24), "p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one frame"):
        CaptionRequest("global", [], "p")


def test_request_key_changes_with_every_input() -> None:
    frames = noise_frames(4, 32, 24)
    base = make_request("instance", frames, None, moving(1, "ball"))
    key = request_key("model-a", base)
    copied = [f.copy() for f in frames]
    assert key == request_key("model-a", make_request("instance", copied, None, moving(1, "ball")))
    assert len(key) == 64
    assert request_key("model-b", base) != key
    shifted = moving(1, "ball")
    shifted.boxes[0] = (0.5, 0.5, 0.6, 0.6)
    assert request_key("model-a", make_request("instance", frames, None, shifted)) != key
    changed = [f.copy() for f in frames]
    changed[2][0, 0, 0] ^= 1
    assert request_key("model-a", make_request("instance", changed, None, moving(1, "ball"))) != key
    crops = PromptConfig(visual=VisualPromptConfig(mode="crops"))
    assert request_key("model-a", make_request("instance", frames, crops, moving(1, "ball"))) != key


def test_instance_info_aligns_a_sampled_trajectory_to_the_sampled_frames() -> None:
    boxes = [[0, 0, 0.1, 0.1], [0, 0, 0.2, 0.2], [0, 0, 0.4, 0.4]]
    car = Instance(5, "car", "", Trajectory([1, 2, 4], boxes, space=FrameSpace.SAMPLED))
    info = InstanceInfo.from_instance(car, num_frames=5)
    assert info.instance_id == 5 and info.phrase == "car"
    assert info.boxes == [None, tuple(boxes[0]), tuple(boxes[1]), None, tuple(boxes[2])]
    assert info.visible_boxes().shape == (3, 4)


def test_instance_info_refuses_a_clip_frame_trajectory() -> None:
    stored = Instance(5, "car", "a car", Trajectory([0, 6, 12], [[0, 0, 0.1, 0.1]] * 3))  # as rows hold it
    with pytest.raises(ValueError, match="sampled_index"):
        InstanceInfo.from_instance(stored, num_frames=3)


def prefix(**visual) -> PromptConfig:
    return PromptConfig(visual=VisualPromptConfig(mode="prefix", max_images=4, max_side=160, **visual))


def test_prefix_prompt_gives_the_boxes_as_coordinates_of_the_shared_frames() -> None:
    frames = noise_frames(5, 320, 180)  # shown at 168x84: 160x90, sides rounded to multiples of 28
    target = InstanceInfo(1, "cup", [(0.1, 0.1, 0.5, 0.6), None, (0.25, 0.5, 0.75, 1.0), None, None])
    other = InstanceInfo(2, "dog", [None, (0.5, 0.4, 0.9, 0.9), None, None, (0.0, 0.0, 1.0, 1.0)])
    request = make_request("instance", frames, prefix(), target, [other])
    # The 3 shared frames are sampled frames 0, 2, 4; the marked frame (frame 2, the largest box) follows.
    assert "You are shown 3 frames sampled in order" in request.prompt
    coordinates = ("ID: 1, is given by its bounding box [x_min, y_min, x_max, y_max] in pixels of the 168x84 "
                   "frames: frame 1 [16, 8, 84, 51], frame 2 [42, 42, 126, 84]; not visible in frame 3.")
    assert coordinates in request.prompt
    assert 'The last image repeats a frame with it marked by a green box labelled "ID: 1".' in request.prompt
    assert 'ID: 2 ("dog", blue box; frame 3 [0, 0, 168, 84]; not visible in frames 1, 2)' in request.prompt
    per_mille = make_request("instance", frames, prefix(coordinates="per-mille", marked_frames=0), target)
    assert "in thousandths (0 to 1000)" in per_mille.prompt  # 4 shared frames now: 0, 1, 3, 4
    assert "frame 1 [100, 100, 500, 600]; not visible in frames 2, 3, 4." in per_mille.prompt
    assert "marked by" not in per_mille.prompt.split("\n")[0]  # no marked frame: coordinates only
    unit = make_request("instance", frames, prefix(coordinates="unit", draw_others=False), target, [other])
    assert "frame 1 [0.100, 0.100, 0.500, 0.600]" in unit.prompt and 'ID: 2 ("dog")' in unit.prompt


def test_media_counts_follow_the_mode() -> None:
    frames = noise_frames(10, 32, 24)
    assert "You are shown 3 frames" in make_request("global", frames, prefix()).prompt  # 4 images, 1 marked
    video = PromptConfig(visual=VisualPromptConfig(video=True))
    assert "You are shown a video clip." in make_request("entities", frames, video).prompt
    assert "You are shown 4 frames" in make_request("instance", frames[:4], video, moving(1, "cup")).prompt


def test_prefix_mode_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"marked_frames must be in \[0, max_images\)"):
        VisualPromptConfig(mode="prefix", max_images=2, marked_frames=2)
    assert VisualPromptConfig(mode="prefix", max_images=2, marked_frames=1).shared_frames() == 1
    assert VisualPromptConfig(max_images=2, marked_frames=5).shared_frames() == 2  # only 'prefix' marks
