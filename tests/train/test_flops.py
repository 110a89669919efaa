"""FLOPs per sample on meta tensors: they move when the crop settings, the media type, the instances per
image, the instance caption length or the loss move."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")

from instvl.config import load_config  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.flops import step_flops  # noqa: E402

SMALL = ["model.vision.width=64", "model.vision.heads=4", "model.teacher.width=32", "model.teacher.heads=2",
         "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
         "intermediate_size: 64}", "model.embed_dim=16", "data.crop_frames=null",
         "model.instance.crop_mask_ratio=0"]


def flops(*overrides: str, media: str = "video", instances: int = 4) -> dict[str, float]:
    cfg = load_config(TrainConfig, "train/tiny", [*SMALL, *overrides])
    return step_flops(cfg, media, instances)  # type: ignore[arg-type]


def test_flop_counts_move_with_the_crop_settings() -> None:
    base = flops()
    assert base["total"] > base["global_only"] > 0 and base["ratio"] == base["total"] / base["global_only"]
    fewer_frames = flops("data.crop_frames=2")
    masked = flops("model.instance.crop_mask_ratio=0.5")
    smaller = flops("data.crop_size=16")
    for cheaper in (fewer_frames, masked, smaller):
        assert cheaper["instance_branch"] < base["instance_branch"]
        assert cheaper["global_only"] == base["global_only"]
    assert flops(instances=8)["instance_branch"] > base["instance_branch"]
    assert flops(instances=0)["instance_branch"] < base["instance_branch"]


def test_images_cost_less_than_videos_and_follow_the_image_mask_ratio() -> None:
    video, image = flops(), flops(media="image")
    assert image["global_only"] < video["global_only"]
    assert flops("model.masking.image_ratio=0.25", media="image")["global_only"] > image["global_only"]


def test_the_image_instance_cap_and_the_instance_text_length_move_the_ratio() -> None:
    uncapped = flops(media="image", instances=4)
    capped = step_flops(load_config(TrainConfig, "train/tiny", [*SMALL, "data.max_instances=4",
                                                                 "data.max_instances_image=1"]), "image")
    assert capped == flops(media="image", instances=1)  # images default to max_instances_image
    assert capped["global_only"] == uncapped["global_only"] and capped["ratio"] < uncapped["ratio"]
    video = step_flops(load_config(TrainConfig, "train/tiny", [*SMALL, "data.max_instances=4",
                                                               "data.max_instances_image=1"]), "video")
    assert video == flops(instances=4)  # videos keep max_instances
    short = flops("data.instance_text_len=8", media="image")
    assert short["global_only"] == uncapped["global_only"]
    assert short["instance_branch"] < uncapped["instance_branch"] and short["ratio"] < uncapped["ratio"]
