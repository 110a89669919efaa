"""TrainConfig and EvalConfig: shape checks across sections, and one rule for the evaluated root."""

import pytest

pytest.importorskip("torch")

from instvl.config import ConfigError, load_config  # noqa: E402
from instvl.train.config import EvalConfig, TrainConfig  # noqa: E402


def test_train_config_rejects_mismatched_frame_counts() -> None:
    with pytest.raises(ConfigError, match="num_frames"):
        load_config(TrainConfig, "train/tiny", ["data.num_frames=8"])


def test_eval_root_defaults_to_the_data_root() -> None:
    cfg = load_config(TrainConfig, "train/tiny", ["data.root=/data/a"])
    assert cfg.eval_root == "/data/a"
    cfg = load_config(TrainConfig, "train/tiny", ["data.root=/data/a", "eval.root=/data/b"])
    assert cfg.eval_root == "/data/b"


def test_eval_reads_what_to_evaluate_from_the_eval_section_only() -> None:
    cfg = load_config(EvalConfig, "train/tiny",
                      ["eval.split=test", "eval.max_samples=5", "checkpoint=runs/x"])
    assert (cfg.eval.split, cfg.eval.max_samples, cfg.checkpoint) == ("test", 5, "runs/x")
    for old in ("eval_root=/data/b", "eval_split=test", "max_samples=5", "eval_max_instances=3"):
        with pytest.raises(ConfigError):
            load_config(EvalConfig, "train/tiny", [old])


def test_the_image_instance_cap_holds_for_training_images_only() -> None:
    data = load_config(TrainConfig, "train/tiny", ["data.max_instances=5", "data.max_instances_image=2"]).data
    assert data.instance_cap("image", train=True) == 2
    assert data.instance_cap("video", train=True) == data.instance_cap(None, train=True) == 5
    assert data.instance_cap("image", train=False) == 5  # evaluation keeps max_instances
    uncapped = load_config(TrainConfig, "train/tiny", ["data.max_instances=5"]).data
    assert uncapped.instance_cap("image", train=True) == 5
    with pytest.raises(ConfigError, match="instance_text_len"):
        load_config(TrainConfig, "train/tiny", ["data.instance_text_len=2"])
