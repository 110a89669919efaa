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
