"""Tests of checkpoints: exact resume, atomic files, pruning, frozen parts, clear errors."""

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from test_data import tokenizer  # noqa: E402
from test_trainer import TinyContrastive, make_trainer  # noqa: E402

from instvl.testing.datasets import write_dataset  # noqa: E402
from instvl.train import checkpoint as ckpt  # noqa: E402
from instvl.train.sinks import read_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ckpt-data"), units=2, per_unit=6, with_media=True)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_and_resume_gives_the_same_loss_curve(root: Path, tmp_path: Path, tok, workers: int) -> None:
    data = {"workers": workers}
    straight = make_trainer(root, tmp_path / "straight", tok, steps=8, data=data)
    expected = [(r["step"], r["loss"], r["lr"]) for r in straight.fit()]

    first = make_trainer(root, tmp_path / "split", tok, steps=8, data=data, run={"ckpt_every": 3})
    first.optim_cfg = first.optim_cfg.model_copy(update={"steps": 5})  # the run is cut short after step 5
    first.fit()
    first.sink.close()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "split")]
    assert names == ["step-0000003.pt", "step-0000005.pt"]

    second = make_trainer(root, tmp_path / "split", tok, steps=8, data=data, resume_step=3)
    second.resume(ckpt.checkpoint_path(tmp_path / "split", 3))
    second.fit()
    second.sink.close()
    got = [(r["step"], r["loss"], r["lr"]) for r in read_jsonl(tmp_path / "split" / "metrics.jsonl")]
    assert [g[0] for g in got] == list(range(1, 9))
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-6)


def test_save_is_atomic_and_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), {"step": step}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-0000002.pt", "step-0000003.pt"]  # no temporary file left behind
    assert ckpt.resolve_resume("auto", tmp_path).name == "step-0000003.pt"
    assert ckpt.resolve_resume(str(tmp_path), "elsewhere").name == "step-0000003.pt"
    assert ckpt.resolve_resume("auto", tmp_path / "empty") is None


def test_unreadable_checkpoint_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "step-0000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="step-0000001.pt: not a readable"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_frozen_parameters_can_be_left_out_and_loaded_back(tmp_path: Path) -> None:
    model = TinyContrastive()
    state = ckpt.model_state(model, skip_frozen=True)
    assert "teacher.weight" not in state and "video.weight" in state
    other = TinyContrastive()
    ckpt.load_model_state(other, state, "mem")
    assert torch.equal(other.video.weight, model.video.weight)
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_model_state(other, {k: v for k, v in state.items() if k != "video.weight"}, "ck.pt")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    ckpt.save_checkpoint(tmp_path / "checkpoints" / "step-0000001.pt", {"rng": ckpt.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "checkpoints" / "step-0000001.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_with_other_data_workers_restarts_the_data_at_the_next_epoch(root: Path, tmp_path: Path, tok,
                                                                            caplog) -> None:
    first = make_trainer(root, tmp_path, tok, steps=7, data={"workers": 0})
    first.fit()
    epoch = first.data_state.next_epoch().start_epoch
    assert epoch >= 1
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 7))
    assert saved["ranks"][0]["workers"] == 0
    second = make_trainer(root, tmp_path, tok, steps=9, data={"workers": 2})
    with caplog.at_level("WARNING"):
        second.resume(ckpt.checkpoint_path(tmp_path, 7))
    assert "1 ranks x 0 data workers" in caplog.text and f"restarts at epoch {epoch}" in caplog.text
    assert second.step == 7 and second.dataset.state.start_epoch == epoch and not second.dataset.state.workers
    assert torch.equal(second.module.video.weight, first.module.video.weight)
    assert second.optimizer.state_dict()["state"]  # the AdamW moments carried over
    assert [r["step"] for r in second.fit()] == [8, 9]
    assert second.data_state.batches == 2
    assert {e for w in second.data_state.workers.values() for e, _ in w["streams"].values()} == {epoch}
