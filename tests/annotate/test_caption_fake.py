"""The deterministic fake captioner and the discriminated captioner config."""

from collections.abc import Callable

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from instvl.annotate.caption import (
    Captioner,
    CaptionerConfig,
    FakeCaptioner,
    HFCaptioner,
    InstanceInfo,
    OpenAICaptioner,
    VLLMCaptioner,
    caption_defects,
    parse_entities,
)
from instvl.annotate.caption.fake import colour_name, describe_motion

BLUE, RED = (30, 80, 220), (220, 30, 30)


@pytest.fixture
def make_scene() -> Callable[..., tuple[list[np.ndarray], InstanceInfo]]:
    """Frames of a red square crossing a blue background, and its instance record."""

    def make(count: int = 5, start: float = 0.05, end: float = 0.75, y: float = 0.1) -> tuple:
        frames, boxes = [], []
        for t in range(count):
            x = start + (end - start) * t / max(1, count - 1)
            frame = np.full((60, 80, 3), BLUE, np.uint8)
            frame[int(y * 60):int(y * 60) + 12, int(x * 80):int(x * 80) + 16] = RED
            frames.append(frame)
            left, top = int(x * 80), int(y * 60)
            boxes.append((left / 80, top / 60, (left + 16) / 80, (top + 12) / 60))
        return frames, InstanceInfo(0, "square", boxes)

    return make


def fake() -> FakeCaptioner:
    config = {"kind": "fake", "entities": ["square", "ball"]}
    return TypeAdapter(CaptionerConfig).validate_python(config).build()


def test_instance_caption_reads_colour_motion_place_and_relation(make_scene) -> None:
    frames, square = make_scene()
    dog = InstanceInfo(1, "dog", [(0.3, 0.6, 0.6, 0.95)] * len(frames))
    captioner = fake()
    [caption] = captioner.caption([captioner.request("instance", frames, square, [dog])])
    assert caption == "A small red square moving right in the upper half of the frame, above the dog."
    assert caption_defects(caption) == []


def test_captions_are_deterministic_and_follow_the_boxes(make_scene) -> None:
    captioner = fake()
    frames, square = make_scene()
    request = captioner.request("instance", frames, square)
    assert captioner.caption([request]) == fake().caption([request])
    back_frames, back = make_scene(start=0.75, end=0.05, y=0.7)
    [leftwards] = captioner.caption([captioner.request("instance", back_frames, back)])
    assert "moving left in the lower half" in leftwards


def test_global_and_entities_requests(make_scene) -> None:
    frames, square = make_scene()
    captioner = fake()
    scene, entities = captioner.caption([captioner.request("global", frames, others=[square]),
                                         captioner.request("entities", frames[:1])])
    assert scene == "A 5-frame video with a mostly blue background showing square."
    assert parse_entities(entities) == ("An image with a mostly blue background.", ["square", "ball"])


def test_motion_and_colour_helpers() -> None:
    still = np.array([[0.1, 0.1, 0.2, 0.2], [0.11, 0.1, 0.21, 0.2]])
    assert describe_motion(still) == "staying still"
    assert describe_motion(np.array([[0.5, 0.5, 0.6, 0.6], [0.2, 0.1, 0.3, 0.2]])) == "moving left and up"
    assert colour_name((250, 250, 245)) == "white" and colour_name((20, 190, 60)) == "green"


def test_config_union_picks_each_backend_by_kind() -> None:
    adapter = TypeAdapter(CaptionerConfig)
    expected = {"fake": FakeCaptioner.Config, "hf": HFCaptioner.Config, "openai": OpenAICaptioner.Config,
                "vllm": VLLMCaptioner.Config}
    for kind, config_class in expected.items():
        assert type(adapter.validate_python({"kind": kind})) is config_class
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        adapter.validate_python({"kind": "gpt"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        adapter.validate_python({"kind": "fake", "temperature": 0.3})
    assert isinstance(fake(), Captioner)


def test_cache_key_follows_answer_settings_but_not_transport(make_scene) -> None:
    frames, square = make_scene()
    captioner = fake()
    request = captioner.request("instance", frames, square)
    same = FakeCaptioner.Config(entities=["square", "ball"], batch_size=1).build()
    shorter = FakeCaptioner.Config(entities=["square", "ball"], cleaning={"max_words": 5}).build()
    assert captioner.key(request) == same.key(request)
    assert captioner.key(request) != shorter.key(request)
    cold = OpenAICaptioner.Config(base_url="http://a/v1", concurrency=1).build()
    warm = OpenAICaptioner.Config(base_url="http://b/v1", concurrency=8).build()
    hot = OpenAICaptioner.Config(temperature=0.7).build()
    assert cold.key(request) == warm.key(request) != hot.key(request)
