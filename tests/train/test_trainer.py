"""Tests of the training loop with a small contrastive stand-in model on real shards."""

import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from test_data import data_config, tokenizer  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from instvl.testing.datasets import write_dataset  # noqa: E402
from instvl.train.config import OptimConfig, RunConfig  # noqa: E402
from instvl.train.data import InstVLDataset  # noqa: E402
from instvl.train.distributed import DistInfo  # noqa: E402
from instvl.train.sinks import default_sinks, plot_curves, read_jsonl  # noqa: E402
from instvl.train.trainer import Trainer, cosine_schedule, param_groups  # noqa: E402


class TinyContrastive(nn.Module):
    """Global and instance InfoNCE over mean colours and bag-of-words text; dropout uses the torch RNG."""

    def __init__(self, dim: int = 16, vocab: int = 30522):
        super().__init__()
        self.video = nn.Linear(3, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(0.2)
        self.words = nn.Embedding(vocab, dim)
        self.log_temp = nn.Parameter(torch.full((1,), math.log(0.1)))  # FSDP2 shards no 0-d tensors
        self.teacher = nn.Linear(3, 3).requires_grad_(False)

    def student_parameters(self):
        return (p for name, p in self.named_parameters() if not name.startswith("teacher."))

    def embed_clip(self, clip):
        return F.normalize(self.drop(self.norm(self.video(self.teacher(clip.mean((2, 3, 4)))))), dim=-1)

    def embed_text(self, ids, mask):
        summed = (self.words(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(summed, dim=-1)

    def contrast(self, a, b):
        logits = a @ b.T / self.log_temp.exp().squeeze()
        target = torch.arange(len(a))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def forward(self, batch):
        text = self.embed_text(batch["text_ids"], batch["text_mask"])
        l_glob = self.contrast(self.embed_clip(batch["video"]), text)
        if batch["inst_crops"].shape[0] > 1:
            l_inst = self.contrast(self.embed_clip(batch["inst_crops"]),
                                   self.embed_text(batch["inst_text_ids"], batch["inst_text_mask"]))
        else:
            l_inst = l_glob * 0
        return {"loss": l_glob + 0.1 * l_inst, "l_glob": l_glob.detach(), "l_inst": l_inst.detach(),
                "temp_glob": self.log_temp.exp().detach().squeeze()}


def make_trainer(root: Path, out: Path, tok, steps: int = 6, rank: int = 0, world: int = 1,
                 strategy: str = "none", data: dict | None = None, run: dict | None = None,
                 optim: dict | None = None, resume_step: int | None = None) -> Trainer:
    torch.manual_seed(0)
    cfg = data_config(root, **(data or {}))
    dataset = InstVLDataset(cfg, tok, max_text_len=16, rank=rank, world_size=world)
    run_cfg = RunConfig(output_dir=str(out), log_every=1, progress=False, tensorboard=False,
                        strategy=strategy, device="cpu", **(run or {}))
    optim_cfg = OptimConfig(lr=5e-2, warmup_steps=2, steps=steps, weight_decay=0.1, **(optim or {}))
    info = DistInfo(rank, world, rank, "cpu", strategy)
    sink = default_sinks(out, resume_step=resume_step, tensorboard=False) if rank == 0 else None
    return Trainer(TinyContrastive(), dataset, optim_cfg, run_cfg, info, sink=sink, config_json="{}")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("trainer-data"), units=2, per_unit=6, with_media=True)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def test_fit_logs_every_step_and_saves_a_final_checkpoint(root: Path, tmp_path: Path, tok) -> None:
    trainer = make_trainer(root, tmp_path, tok, steps=6)
    history = trainer.fit()
    trainer.sink.close()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] == [r["step"] for r in history]
    assert all(math.isfinite(r["loss"]) and r["samples"] == 2 and r["grad_norm"] > 0 for r in records)
    assert all(r["text_cut_global"] == r["text_cut_inst"] == 0 for r in records)  # the captions fit
    assert (tmp_path / "checkpoints" / "step-0000006.pt").is_file()
    assert records[0]["lr"] < records[1]["lr"] and records[-1]["lr"] < records[1]["lr"]
    assert plot_curves(records, tmp_path / "curve.png").stat().st_size > 0


def test_training_lowers_the_loss(root: Path, tmp_path: Path, tok) -> None:
    trainer = make_trainer(root, tmp_path, tok, steps=30, data={"batch_size": 4, "shuffle_buffer": 1},
                           optim={"clip_grad": None})
    trainer.module.drop.p = 0.0
    losses = [r["l_glob"] for r in trainer.fit()]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_gradient_accumulation_consumes_several_batches_per_step(root: Path, tmp_path: Path, tok) -> None:
    trainer = make_trainer(root, tmp_path, tok, steps=2, optim={"grad_accum": 3})
    history = trainer.fit()
    assert [r["samples"] for r in history] == [6, 6]
    assert trainer.data_state.batches == 6


def test_bf16_autocast_runs_on_cpu(root: Path, tmp_path: Path, tok) -> None:
    history = make_trainer(root, tmp_path, tok, steps=2, run={"precision": "bf16"}).fit()
    assert all(math.isfinite(r["loss"]) for r in history)


def test_no_weight_decay_on_norms_biases_temperatures_and_frozen_parts_left_out() -> None:
    model = TinyContrastive()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"video.weight", "words.weight"}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert no_decay_names == {"video.bias", "norm.weight", "norm.bias", "log_temp"}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_cosine_schedule_warms_up_then_decays_to_the_floor() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_schedule(optimizer, warmup=4, total=12, min_ratio=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_metrics_file_is_cut_back_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6))
    path.write_text(lines + '{"step": 6, "lo')  # a line cut off by a crash
    sinks = default_sinks(tmp_path, resume_step=3, tensorboard=False)
    sinks.write({"step": 4, "loss": 0.5})
    sinks.close()
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4]
