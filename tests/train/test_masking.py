"""UMT masking: exact visible counts, attention guidance, tube consistency, clear errors."""

import pytest
import torch

from instvl.train.model.masking import MaskingConfig, select_visible
from instvl.train.model.teacher import merge_tubelets


def per_slot(index: torch.Tensor, grid_t: int, num_patches: int) -> list[list[set[int]]]:
    """Kept spatial positions per (row, temporal slot)."""
    slots = [[set() for _ in range(grid_t)] for _ in range(index.shape[0])]
    for row, kept in enumerate(index.tolist()):
        for token in kept:
            slots[row][token // num_patches].add(token % num_patches)
    return slots


@pytest.mark.parametrize("kind", ["attention", "random"])
@pytest.mark.parametrize("ratio,expected", [(0.8, 4), (0.5, 8), (0.0, 16), (0.99, 1)])
def test_keeps_exactly_the_requested_count_per_slot(kind: str, ratio: float, expected: int) -> None:
    cfg = MaskingConfig(ratio=ratio, kind=kind)
    attention = torch.rand(3, 2, 16)
    index = select_visible(cfg, 3, 2, 16, attention, torch.Generator().manual_seed(0))
    assert index.shape == (3, 2 * expected)
    assert torch.equal(index, index.sort(dim=1).values)
    for row in per_slot(index, 2, 16):
        assert [len(slot) for slot in row] == [expected, expected]
    assert int(index.min()) >= 0 and int(index.max()) < 32


def test_topk_keeps_the_most_attended_tokens_of_each_slot() -> None:
    attention = torch.rand(2, 3, 10)
    index = select_visible(MaskingConfig(ratio=0.7, sampling="topk"), 2, 3, 10, attention)
    for row in range(2):
        for slot in range(3):
            best = set(attention[row, slot].argsort(descending=True)[:3].tolist())
            assert per_slot(index, 3, 10)[row][slot] == best


def test_multinomial_draws_only_where_the_teacher_attends() -> None:
    attention = torch.zeros(4, 2, 20)
    hot = torch.tensor([2, 7, 11, 19])
    attention[:, :, hot] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    cfg = MaskingConfig(ratio=0.8, sampling="multinomial")
    index = select_visible(cfg, 4, 2, 20, attention, torch.Generator().manual_seed(1))
    for row in per_slot(index, 2, 20):
        assert all(slot == set(hot.tolist()) for slot in row)


def test_random_masking_ignores_attention_and_varies() -> None:
    cfg = MaskingConfig(ratio=0.75, kind="random")
    first = select_visible(cfg, 1, 1, 64, None, torch.Generator().manual_seed(0))
    second = select_visible(cfg, 1, 1, 64, None, torch.Generator().manual_seed(1))
    assert first.shape == (1, 16) and not torch.equal(first, second)


def test_tube_scope_keeps_the_same_positions_in_every_slot() -> None:
    attention = torch.rand(2, 4, 12)
    attention[:, 0, :3] += 5.0  # only slot 0 favours positions 0-2; the tube choice follows the time mean
    index = select_visible(MaskingConfig(ratio=0.75, scope="tube", sampling="topk"), 2, 4, 12, attention)
    for row, slots in enumerate(per_slot(index, 4, 12)):
        assert all(slot == slots[0] for slot in slots)
        assert slots[0] == set(attention[row].mean(0).argsort(descending=True)[:3].tolist())


def test_frame_scope_differs_between_slots_when_attention_does() -> None:
    attention = torch.zeros(1, 2, 8)
    attention[0, 0, :2] = 1.0
    attention[0, 1, 6:] = 1.0
    index = select_visible(MaskingConfig(ratio=0.75, sampling="topk"), 1, 2, 8, attention)
    assert index.tolist() == [[0, 1, 14, 15]]


def test_tubelet_frames_are_merged_before_the_choice() -> None:
    per_frame = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2 * 4, 3)  # B=2, T=4, N=3
    merged = merge_tubelets(per_frame, batch=2, tubelet_size=2)
    assert merged.shape == (2, 2, 3)
    assert torch.equal(merged[0, 0], (per_frame[0] + per_frame[1]) / 2)
    assert torch.equal(merged[1, 1], (per_frame[6] + per_frame[7]) / 2)


def test_attention_masking_needs_matching_attention() -> None:
    with pytest.raises(ValueError, match="needs the teacher's attention"):
        select_visible(MaskingConfig(), 1, 2, 4, None)
    with pytest.raises(ValueError, match="does not match the token grid"):
        select_visible(MaskingConfig(), 1, 2, 4, torch.rand(1, 2, 5))


def test_ratio_must_leave_something_visible() -> None:
    with pytest.raises(ValueError):
        MaskingConfig(ratio=1.0)
