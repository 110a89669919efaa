"""Two-process training on CPU (gloo): DDP keeps the replicas identical; FSDP trains and checkpoints."""

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from test_data import tokenizer  # noqa: E402
from test_trainer import make_trainer  # noqa: E402

from instvl.testing.datasets import write_dataset  # noqa: E402
from instvl.train import checkpoint as ckpt  # noqa: E402
from instvl.train import distributed as dist_utils  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_rank(rank: int, world: int, root: str, out: str, port: int, strategy: str, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist_utils.init_distributed(strategy, "cpu")
    try:
        trainer = make_trainer(Path(root), Path(out), tokenizer(), steps=4 if resume else 3, rank=rank,
                               world=world, strategy=strategy, resume_step=3 if resume else None)
        if resume:
            trainer.resume(ckpt.checkpoint_path(out, 3))
        history = trainer.fit()
        params = {n: p.detach().clone() for n, p in dist_utils.unwrap(trainer.model).named_parameters()}
        if strategy == "fsdp":
            params = {n: p.full_tensor() for n, p in params.items()}
        torch.save({"params": params, "history": history, "batches": trainer.data_state.batches},
                   Path(out) / f"rank{rank}-{int(resume)}.pt")
    finally:
        dist_utils.cleanup()


def spawn(root: Path, out: Path, strategy: str, resume: bool = False) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(train_rank, args=(2, str(root), str(out), free_port(), strategy, resume), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}-{int(resume)}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ddp-data"), units=2, per_unit=8, with_media=True)


def test_ddp_ranks_end_with_identical_parameters(root: Path, tmp_path: Path) -> None:
    ranks = spawn(root, tmp_path, "ddp")
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    assert [r["step"] for r in ranks[0]["history"]] == [1, 2, 3]
    assert ranks[0]["batches"] == ranks[1]["batches"] == 3
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 3))
    assert [r["data"]["batches"] for r in saved["ranks"]] == [3, 3]  # each rank's own data position
    assert torch.equal(saved["model"]["video.weight"], ranks[0]["params"]["video.weight"])


def test_fsdp_trains_checkpoints_and_resumes(root: Path, tmp_path: Path) -> None:
    first = spawn(root, tmp_path, "fsdp")
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 3))
    assert torch.equal(saved["model"]["video.weight"], first[0]["params"]["video.weight"])
    resumed = spawn(root, tmp_path, "fsdp", resume=True)
    assert [r["step"] for r in resumed[0]["history"]] == [4]
    assert resumed[0]["batches"] == 4
    for name, value in resumed[0]["params"].items():
        assert torch.equal(value, resumed[1]["params"][name]), name
