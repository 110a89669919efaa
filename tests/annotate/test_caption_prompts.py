"""Prompt templates from package data, request rendering, validation and cache keys."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
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


@pytest.fixture
def make_frames() -> Callable[..., list[np.ndarray]]:
    def make(count: int = 4, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]
    return make


def moving(instance_id: int, phrase: str, count: int = 4) -> InstanceInfo:
    return InstanceInfo(instance_id, phrase, [(0.1 * t, 0.2, 0.1 * t + 0.3, 0.6) for t in range(count)])


def test_package_prompts_ship_with_the_package() -> None:
    assert {"global", "instance", "entities"} <= set(package_prompt_names())
    for name in ("global", "instance", "entities"):
        assert "$media" in load_template(name).template


def test_template_can_be_a_user_file(tmp_path: Path, make_frames) -> None:
    path = tmp_path / "short.txt"
    path.write_text("Describe $phrase {JSON braces stay} in $max_words words.")
    prompts = PromptConfig(instance_template=str(path), max_words=12)
    request = make_request("instance", make_frames(), prompts, moving(3, "cat"))
    assert request.prompt == "Describe cat {JSON braces stay} in 12 words."


def test_unknown_template_and_bad_placeholder_are_clear_errors(tmp_path: Path, make_frames) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-prompt.*package prompts: entities, global"):
        load_template("no-such-prompt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Describe $phrase.")
    with pytest.raises(ValueError, match=r"bad.txt.*\(global\) has a bad placeholder 'phrase'"):
        make_request("global", make_frames(), PromptConfig(global_template=str(bad)))


def test_instance_prompt_names_the_box_colour_and_the_others(make_frames) -> None:
    target, other = moving(1, "ball"), moving(2, "dog")
    request = make_request("instance", make_frames(), None, target, [target, other])
    assert 'marked by a green box labelled "ID: 1"' in request.prompt
    assert 'ID: 2 ("dog", blue box)' in request.prompt
    assert [o.instance_id for o in request.others] == [2]  # the target is not its own neighbour
    crops = PromptConfig(visual=VisualPromptConfig(mode="crops"))
    cropped = make_request("instance", make_frames(), crops, target, [other])
    assert "close-up crop" in cropped.prompt and "blue box" not in cropped.prompt


def test_prompt_counts_the_images_actually_sent(make_frames) -> None:
    prompts = PromptConfig(visual=VisualPromptConfig(max_images=3))
    assert "3 frames sampled" in make_request("global", make_frames(10), prompts).prompt
    assert "an image" in make_request("global", make_frames(1), prompts).prompt


def test_requests_are_validated(make_frames) -> None:
    with pytest.raises(ValueError, match="4 boxes for 3 frames"):
        make_request("instance", make_frames(3), None, moving(1, "ball", count=4))
    with pytest.raises(ValueError, match="needs `instance`"):
        CaptionRequest("instance", make_frames(), "p")
    with pytest.raises(ValueError, match="unknown caption request kind 'story'"):
        CaptionRequest("story", make_frames(), "p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one frame"):
        CaptionRequest("global", [], "p")


def test_request_key_changes_with_every_input(make_frames) -> None:
    frames = make_frames()
    base = make_request("instance", frames, None, moving(1, "ball"))
    key = request_key("model-a", base)
    assert key == request_key("model-a", make_request("instance", [f.copy() for f in frames], None, moving(1, "ball")))
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


def test_instance_info_aligns_a_trajectory_to_the_sampled_frames() -> None:
    info = InstanceInfo.from_track(5, "car", [2, 3, 4, 8], [(0, 0, 0.1, 0.1), (0, 0, 0.2, 0.2),
                                                          (0, 0, 0.3, 0.3), (0, 0, 0.4, 0.4)], sampled=[0, 3, 6, 8])
    assert info.boxes == [None, (0, 0, 0.2, 0.2), None, (0, 0, 0.4, 0.4)]
    assert info.visible_boxes().shape == (2, 4)
