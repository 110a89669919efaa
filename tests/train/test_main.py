"""`instvl train` end to end: the tiny preset on InstVL-Synth, with the in-training eval, then resumed."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from instvl.config import load_config  # noqa: E402
from instvl.datasets.synth import SynthConfig, generate  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.main import main  # noqa: E402
from instvl.train.sinks import read_jsonl  # noqa: E402


def test_instvl_train_runs_the_tiny_preset_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "synth"
    generate(load_config(SynthConfig, "datasets/synth-tiny", [f"output={data}", "num_samples=8"]))
    overrides = [f"data.root={data}", f"run.output_dir={tmp_path / 'run'}", "data.split=null",
                 "optim.steps=2", "model.vision.depth=1", "model.teacher.depth=1",
                 "model.loss.align_layers=1", "model.text.freeze_layers=6", "run.resume=auto",
                 "eval.every=2", "eval.split=null"]
    assert main(load_config(TrainConfig, "train/tiny", overrides)) == 0
    assert "| loss |" in capsys.readouterr().out
    longer = overrides[:3] + ["optim.steps=3"] + overrides[4:]
    assert main(load_config(TrainConfig, "train/tiny", longer)) == 0
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert 0 <= records[1]["eval.global.mean_recall"] <= 100 and "eval.instance.mean_recall" in records[1]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-0000003.pt", weights_only=True)
    assert any(k.startswith("teacher.") for k in saved["model"])  # a random teacher cannot be rebuilt: kept
