"""Losses against hand computations: L_rec (Eq. 1), global InfoNCE, instance InfoNCE (Eq. 8), temperatures."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instvl.train.losses import LearnableTemperature, alignment_loss, global_contrastive, instance_contrastive


@pytest.fixture
def unit_rows():
    """Factory: n random L2-normalised rows of size d, seeded."""

    def make(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
        return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)

    return make


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def expected_infonce(a: np.ndarray, b: np.ndarray, tau: float, allowed) -> float:
    """Mean over rows n of -log softmax over allowed columns m of a_n.b_m / tau, at m = n."""
    losses = []
    for n in range(len(a)):
        logits = [float(a[n] @ b[m]) / tau for m in range(len(b)) if allowed(n, m)]
        losses.append(logsumexp(logits) - float(a[n] @ b[n]) / tau)
    return sum(losses) / len(losses)


def test_alignment_loss_matches_squared_distance_of_normalised_features() -> None:
    rng = np.random.default_rng(0)
    student = [rng.normal(size=(2, 3, 4)) for _ in range(2)]
    teacher = [rng.normal(size=(2, 3, 4)) for _ in range(2)]
    per_layer = []
    for s, t in zip(student, teacher, strict=True):
        total = 0.0
        for b in range(2):
            for token in range(3):
                diff = s[b, token] / np.linalg.norm(s[b, token]) - t[b, token] / np.linalg.norm(t[b, token])
                total += float(diff @ diff)
        per_layer.append(total / 6)
    got = alignment_loss([torch.tensor(x) for x in student], [torch.tensor(x) for x in teacher])
    assert got.item() == pytest.approx(sum(per_layer) / 2, rel=1e-5)


def test_alignment_loss_is_zero_for_scaled_copies_and_rejects_mismatches() -> None:
    t = torch.randn(2, 5, 4)
    assert alignment_loss([3.0 * t], [t]).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        alignment_loss([torch.randn(2, 5, 4)], [torch.randn(2, 4, 4)])
    with pytest.raises(ValueError, match="matching non-empty"):
        alignment_loss([], [])


def test_global_contrastive_matches_hand_computation(unit_rows) -> None:
    video, text, tau = unit_rows(4, seed=1), unit_rows(4, seed=2), 0.1
    v, t = video.double().numpy(), text.double().numpy()
    everything = lambda n, m: True  # noqa: E731
    expected = (expected_infonce(v, t, tau, everything) + expected_infonce(t, v, tau, everything)) / 2
    got = global_contrastive(video, text, torch.tensor(tau))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_instance_contrastive_masks_same_sample_negatives(unit_rows) -> None:
    inst, text, tau = unit_rows(5, seed=3), unit_rows(5, seed=4), 0.07
    sample = [0, 0, 1, 2, 2]
    allowed = lambda n, m: m == n or sample[m] != sample[n]  # noqa: E731  (alpha of Eq. 8)
    a, b = inst.double().numpy(), text.double().numpy()
    expected = (expected_infonce(a, b, tau, allowed) + expected_infonce(b, a, tau, allowed)) / 2
    got = instance_contrastive(inst, text, torch.tensor(sample), torch.tensor(tau))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    unmasked = instance_contrastive(inst, text, torch.arange(5), torch.tensor(tau))
    assert unmasked.item() != pytest.approx(got.item(), rel=1e-3)


def pair_probe(partner: int, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings where `strength` changes only the similarity of instance 0 with caption `partner`.

    Dimension 6 is used by instance 0 alone and dimension 7 by no instance, so moving caption
    `partner` between them changes one entry of the similarity matrix and keeps its norm 1.
    """
    rng = np.random.default_rng(5)
    inst = np.zeros((4, 8))
    inst[:, :6] = rng.normal(size=(4, 6))
    inst[0, 6] = 1.0
    inst /= np.linalg.norm(inst, axis=1, keepdims=True)
    text = np.zeros((4, 8))
    shared = rng.normal(size=(4, 6))
    text[:, :6] = 0.3 * shared / np.linalg.norm(shared, axis=1, keepdims=True)
    text[partner, 6] = strength
    text[:, 7] = np.sqrt(1.0 - (text[:, :7] ** 2).sum(axis=1))
    return torch.tensor(inst, dtype=torch.float32), torch.tensor(text, dtype=torch.float32)


def test_same_sample_pair_similarity_does_not_change_the_loss() -> None:
    sample, tau = torch.tensor([0, 0, 1, 1]), torch.tensor(0.1)
    same = [instance_contrastive(*pair_probe(1, s), sample, tau).item() for s in (0.0, 0.5, 0.9)]
    assert same == pytest.approx([same[0]] * 3, rel=1e-6)
    other = [instance_contrastive(*pair_probe(2, s), sample, tau).item() for s in (0.0, 0.9)]
    assert other[1] > other[0] + 1e-3  # a cross-sample negative that grows closer costs more


def test_instance_contrastive_with_no_instances_is_zero_and_differentiable() -> None:
    tau = LearnableTemperature()
    empty = torch.zeros(0, 8, requires_grad=True)
    loss = instance_contrastive(empty, empty, torch.zeros(0, dtype=torch.long), tau())
    loss.backward()
    assert loss.item() == 0.0 and tau.log_value.grad is not None


def test_contrastive_shape_errors_are_clear(unit_rows) -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        global_contrastive(unit_rows(3), unit_rows(4), torch.tensor(0.1))
    with pytest.raises(ValueError, match="do not match"):
        instance_contrastive(unit_rows(3), unit_rows(3), torch.zeros(2, dtype=torch.long), torch.tensor(0.1))


def test_temperature_is_learnable_and_clamped(unit_rows) -> None:
    tau = LearnableTemperature(init=0.07, min_value=0.01, max_value=0.5)
    assert tau().item() == pytest.approx(0.07)
    global_contrastive(unit_rows(4, seed=1), unit_rows(4, seed=2), tau()).backward()
    assert tau.log_value.grad is not None and tau.log_value.grad.abs().item() > 0
    with torch.no_grad():
        tau.log_value.fill_(math.log(10.0))
    assert tau().item() == pytest.approx(0.5)
    assert tau.log_value.item() == pytest.approx(math.log(0.5))  # the parameter itself is clamped
    with torch.no_grad():
        tau.log_value.fill_(math.log(1e-5))
    assert tau().item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must lie in"):
        LearnableTemperature(init=0.9, max_value=0.5)


def _two_rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        data = torch.load(Path(out_dir) / "inputs.pt")
        video = data["video"][rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
        text = data["text"][rank * 3:(rank + 1) * 3].clone()
        tau = torch.tensor(0.1)
        out = {}
        # Case "all": rank 0 holds all 4 instances (two of sample 0, two of sample 1); rank 1 holds none.
        # Case "uneven": rank 0 holds instance 0 alone; rank 1 holds instances 1-3 (of its samples 0, 0, 1).
        for case, rows, index in (("all", [range(4), range(0)], [[0, 0, 1, 1], []]),
                                  ("uneven", [range(1), range(1, 4)], [[0], [0, 0, 1]])):
            inst = data["inst"][list(rows[rank])].clone().requires_grad_(True)
            loss = instance_contrastive(inst, data["inst_text"][list(rows[rank])],
                                        torch.tensor(index[rank], dtype=torch.long), tau)
            loss.backward()
            out[case] = {"l_inst": loss.detach(), "inst_grad": inst.grad}
        l_glob = global_contrastive(video, text, tau)
        l_glob.backward()
        out |= {"l_glob": l_glob.detach(), "video_grad": video.grad}
        # L_rec with a batch that lost samples: rank 0 keeps 1 of the 3 feature maps, rank 1 keeps 2.
        student = data["student"][[0] if rank == 0 else [1, 2]].clone().requires_grad_(True)
        l_rec = alignment_loss([student], [data["teacher"][[0] if rank == 0 else [1, 2]]])
        l_rec.backward()
        out |= {"l_rec": l_rec.detach(), "student_grad": student.grad}
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_losses_gather_across_two_ranks(unit_rows, tmp_path: Path) -> None:
    data = {"video": unit_rows(6, seed=1), "text": unit_rows(6, seed=2),
            "inst": unit_rows(4, seed=3), "inst_text": unit_rows(4, seed=4),
            "student": torch.randn(3, 5, 8), "teacher": torch.randn(3, 5, 8)}
    torch.save(data, tmp_path / "inputs.pt")
    torch.multiprocessing.spawn(_two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    tau = torch.tensor(0.1)
    video = data["video"].clone().requires_grad_(True)
    full_glob = global_contrastive(video, data["text"], tau)
    full_glob.backward()
    # Each rank scores its own rows against all gathered columns; the mean over ranks is the full loss.
    assert (ranks[0]["l_glob"] + ranks[1]["l_glob"]).item() / 2 == pytest.approx(full_glob.item(), rel=1e-5)
    # Gradients summed over ranks by the gather's backward, averaged as DDP does, give the full gradient.
    local_grads = torch.cat([ranks[0]["video_grad"], ranks[1]["video_grad"]]) / 2
    assert torch.allclose(local_grads, video.grad, atol=1e-6)
    for case, full_index in (("all", [0, 0, 1, 1]), ("uneven", [0, 1, 1, 2])):
        inst = data["inst"].clone().requires_grad_(True)
        full_inst = instance_contrastive(inst, data["inst_text"], torch.tensor(full_index), tau)
        full_inst.backward()
        per_rank = [r[case] for r in ranks]
        # Each rank's mean is weighted by its share of the instances: the rank mean is the full-batch loss,
        # and the DDP-averaged gradient of every instance is its full-batch gradient (not 2.86x of it).
        mean = (per_rank[0]["l_inst"] + per_rank[1]["l_inst"]).item() / 2
        assert mean == pytest.approx(full_inst.item(), rel=1e-5), case
        grads = torch.cat([per_rank[0]["inst_grad"], per_rank[1]["inst_grad"]]) / 2
        assert torch.allclose(grads, inst.grad, atol=1e-6), case
    assert ranks[1]["all"]["l_inst"].item() == 0.0
    student = data["student"].clone().requires_grad_(True)
    full_rec = alignment_loss([student], [data["teacher"]])
    full_rec.backward()
    assert (ranks[0]["l_rec"] + ranks[1]["l_rec"]).item() / 2 == pytest.approx(full_rec.item(), rel=1e-5)
    rec_grads = torch.cat([ranks[0]["student_grad"], ranks[1]["student_grad"]]) / 2
    assert torch.allclose(rec_grads, student.grad, atol=1e-6)
