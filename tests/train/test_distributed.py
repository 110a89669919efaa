"""Two-rank training of the real InstAP model (tiny config) on CPU (gloo), under DDP and FSDP.

One spawned job per strategy runs every scenario in the same process group, and the tests read what it
recorded: the in-training eval on a step that is not a log step (once a hang), a strict resume that
refuses a checkpoint with missing weights, the weight-decay groups of the wrapped model, and the
gradient of a batch whose instances are spread unevenly over the ranks against the single-process
full-batch gradient. The job runs under a deadline, so a collective that hangs fails the tests.
"""

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from instvl.testing.datasets import write_dataset  # noqa: E402
from instvl.train import checkpoint as ckpt  # noqa: E402
from instvl.train import distributed as dist_utils  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.main import build_trainer, eval_hook  # noqa: E402

DEADLINE_S = 420
"""A job of two ranks takes well under a minute on an idle 2-core machine; past this it hangs."""
DROPPED = ("vision_proj.", "instance_attn.")
INSTANCES = (1, 0, 3, 2)
"""Instances per sample of the gradient batch: rank 0 gets samples 0-1 (one instance), rank 1 the rest."""


def tiny_config(root: Path, out: Path, strategy: str) -> TrainConfig:
    quiet_text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "intermediate_size": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return TrainConfig.model_validate({
        "model": {"vision": {"img_size": 32, "num_frames": 4, "tubelet_size": 2, "patch_size": 8, "width": 32,
                             "depth": 2, "heads": 2, "pos_embed": "learned"},
                  "teacher": {"kind": "vit_random", "width": 32, "depth": 2, "heads": 2, "patch_size": 8},
                  "text": {"random_config": quiet_text, "max_len": 16},
                  # Top-k masking is deterministic per sample, so split and full batches mask alike.
                  "masking": {"ratio": 0.5, "sampling": "topk"},
                  "loss": {"align_layers": 1}, "embed_dim": 16},
        "data": {"root": str(root), "batch_size": 2, "num_frames": 4, "img_size": 32, "crop_size": 16,
                 "max_instances": 2, "shuffle_buffer": 4},
        "optim": {"lr": 1e-3, "warmup_steps": 1, "steps": 4, "weight_decay": 0.05},
        # Eval at step 3, which is neither a log step (every 2) nor the last: rank 0 alone used to log it.
        "run": {"output_dir": str(out), "log_every": 2, "strategy": strategy, "device": "cpu",
                "progress": False, "tensorboard": False},
        "eval": {"every": 3, "split": None, "max_samples": 4},
    })


def gradient_batch() -> dict[str, Any]:
    """Four samples with INSTANCES instances; the last instance is absent from every sampled frame."""
    g = torch.Generator().manual_seed(1)
    count = sum(INSTANCES)

    def text(rows: int) -> tuple[Any, Any]:
        ids = torch.randint(1000, 30000, (rows, 10), generator=g)
        ids[:, 0] = 101
        return ids, (torch.arange(10)[None] < torch.randint(4, 11, (rows, 1), generator=g)).long()

    (text_ids, text_mask), (inst_ids, inst_mask) = text(len(INSTANCES)), text(count)
    present = torch.ones(count, 4, dtype=torch.bool)
    present[-1] = False
    return {"video": torch.randn(len(INSTANCES), 3, 4, 32, 32, generator=g), "text_ids": text_ids,
            "text_mask": text_mask, "inst_crops": torch.randn(count, 3, 4, 16, 16, generator=g),
            "inst_text_ids": inst_ids, "inst_text_mask": inst_mask,
            "inst_sample_index": torch.arange(len(INSTANCES)).repeat_interleave(torch.tensor(INSTANCES)),
            "inst_boxes": torch.rand(count, 4, 4, generator=g), "inst_present": present}


def rank_half(batch: dict[str, Any], rank: int) -> dict[str, Any]:
    """Samples 2*rank and 2*rank+1 of the batch with their instances (sample index made local)."""
    rows = slice(2 * rank, 2 * rank + 2)
    keep = (batch["inst_sample_index"] >= rows.start) & (batch["inst_sample_index"] < rows.stop)
    half = {k: batch[k][rows] for k in ("video", "text_ids", "text_mask")}
    half |= {k: batch[k][keep] for k in batch if k.startswith("inst_")}
    half["inst_sample_index"] = half["inst_sample_index"] - rows.start
    return half


def gradients(cfg: TrainConfig, info: dist_utils.DistInfo, batch: dict[str, Any]) -> dict[str, Any]:
    """Parameter gradients of one forward/backward of `batch` (averaged over ranks, unsharded)."""
    torch.manual_seed(0)
    model = cfg.model.build()
    wrapped = dist_utils.wrap_model(model, info)
    wrapped(batch)["loss"].backward()
    grads = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            grad = param.grad
            grads[name] = (grad.full_tensor() if hasattr(grad, "full_tensor") else grad).detach().clone()
    return grads


def rank_job(rank: int, cfg_json: str, port: int, batch_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    cfg = TrainConfig.model_validate_json(cfg_json)
    out = Path(cfg.run.output_dir)
    info = dist_utils.init_distributed(cfg.run.strategy, "cpu")
    result: dict[str, Any] = {}
    try:
        trainer = build_trainer(cfg, info)
        trainer.on_step = eval_hook(cfg, trainer)
        result["history"] = trainer.fit()
        names = {id(p): n for n, p in trainer.module.named_parameters()}
        result["groups"] = [{"decay": g["weight_decay"], "names": sorted(names[id(p)] for p in g["params"])}
                            for g in trainer.optimizer.param_groups]
        final = ckpt.checkpoint_path(out, cfg.optim.steps)
        if info.is_main:
            state = ckpt.load_checkpoint(final)
            state["model"] = {k: v for k, v in state["model"].items() if not k.startswith(DROPPED)}
            torch.save(state, out / "missing-keys.pt")
        dist_utils.barrier(info)
        fresh = build_trainer(cfg, info)
        try:
            fresh.resume(out / "missing-keys.pt")
            result["refused"] = None
        except ckpt.CheckpointError as err:
            result["refused"] = str(err)
        fresh.resume(final)
        result["resumed_step"] = fresh.step
        result["grads"] = gradients(cfg, info, rank_half(torch.load(batch_file), rank))
    finally:
        dist_utils.cleanup()
    torch.save(result, out / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_ranks(cfg: TrainConfig, batch_file: Path) -> list[dict[str, Any]]:
    """Spawn the two ranks and wait for them, failing (and killing them) past DEADLINE_S."""
    import torch.multiprocessing as mp

    context = mp.start_processes(rank_job, args=(cfg.model_dump_json(), free_port(), str(batch_file)),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"two-rank {cfg.run.strategy} job still running after {DEADLINE_S}s: a hang")
    out = Path(cfg.run.output_dir)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("instap-data"), units=2, per_unit=8, with_media=True)


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "batch.pt"
    torch.save(gradient_batch(), path)
    return path


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def job(request: pytest.FixtureRequest, root: Path, batch_file: Path,
        tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, list[dict[str, Any]]]:
    cfg = tiny_config(root, tmp_path_factory.mktemp(f"run-{request.param}"), request.param)
    return cfg, run_two_ranks(cfg, batch_file)


def test_eval_on_a_step_that_is_not_a_log_step_does_not_hang(job) -> None:
    _, ranks = job
    for history in (r["history"] for r in ranks):
        assert [r["step"] for r in history] == [1, 2, 3, 4]  # 3: the eval step, logged by every rank
    assert 0 <= ranks[0]["history"][2]["eval.global.mean_recall"] <= 100  # evaluated under FSDP too
    assert "eval.instance.mean_recall" in ranks[0]["history"][2]
    assert "eval.global.mean_recall" not in ranks[1]["history"][2]


def test_resume_refuses_a_checkpoint_with_missing_weights(job) -> None:
    _, ranks = job
    for rank in ranks:
        assert rank["refused"] is not None and "missing" in rank["refused"]
        assert any(prefix in rank["refused"] for prefix in DROPPED)
        assert rank["resumed_step"] == 4  # the intact checkpoint (teacher left out or not) still loads


def test_weight_decay_spares_position_tables_norms_biases_and_temperatures(job) -> None:
    _, ranks = job
    decay, no_decay = ranks[0]["groups"]
    assert decay["decay"] == 0.05 and no_decay["decay"] == 0.0
    assert {"student.pos_space", "student.pos_time", "temp_glob.log_value", "temp_inst.log_value",
            "student.norm.weight", "student.blocks.0.attn.qkv.bias",
            "text.bert.embeddings.position_embeddings.weight"} <= set(no_decay["names"])
    assert {"student.patch_embed.weight", "student.blocks.0.attn.qkv.weight", "vision_proj.weight",
            "text.bert.embeddings.word_embeddings.weight"} <= set(decay["names"])
    assert not any(n.startswith("teacher.") for group in (decay, no_decay) for n in group["names"])


def test_uneven_instances_give_the_full_batch_gradient(job, batch_file: Path) -> None:
    cfg, ranks = job
    reference = gradients(cfg, dist_utils.DistInfo(), torch.load(batch_file))
    for rank in ranks:
        assert set(rank["grads"]) == set(reference)
        for name, grad in reference.items():
            assert torch.allclose(rank["grads"][name], grad, rtol=1e-4, atol=1e-6), name
    assert reference["instance_attn.blocks.0.q.weight"].abs().sum() > 0


def test_elastic_resume_on_one_rank_keeps_the_weights_and_restarts_the_data(job, caplog) -> None:
    cfg, _ = job
    if cfg.run.strategy == "fsdp":
        pytest.skip("the DDP checkpoint covers it; a full state dict does not depend on the strategy")
    single = cfg.model_copy(update={"run": cfg.run.model_copy(update={"strategy": "none"})})
    trainer = build_trainer(single, dist_utils.DistInfo())
    path = ckpt.checkpoint_path(cfg.run.output_dir, 4)
    with caplog.at_level("WARNING"):
        trainer.resume(path)
    assert "saved by 2 ranks" in caplog.text and "restarts at epoch" in caplog.text
    saved = ckpt.load_checkpoint(path)
    assert trainer.step == 4
    weight = trainer.module.state_dict()["vision_proj.weight"]
    assert torch.equal(weight, saved["model"]["vision_proj.weight"])
    epoch = trainer.dataset.state.start_epoch
    assert epoch >= 1 and not trainer.dataset.state.workers and trainer.data_state.batches == 0
    assert f"restarts at epoch {epoch}" in caplog.text
    assert trainer.optimizer.state_dict()["state"]  # AdamW moments carried over
    trainer.optim_cfg = trainer.optim_cfg.model_copy(update={"steps": 5})
    assert [r["step"] for r in trainer.fit()] == [5]
