"""Grounding head: box maths against hand values, learnability, metrics and the model-facing loop."""

import math

import pytest
import torch
from torch import nn

from instvl.geometry import box_iou, cxcywh_to_xyxy
from instvl.train.grounding import (
    GroundingConfig,
    GroundingHead,
    cache_features,
    cxcywh_to_xyxy_torch,
    evaluate_grounding_head,
    generalized_box_iou,
    grounding_loss,
    grounding_metrics,
    infer_grid,
    paired_box_iou_torch,
    train_grounding_head,
    xyxy_to_cxcywh_torch,
)


def test_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    giou = generalized_box_iou(a, b)
    # disjoint: IoU 0, union 2, hull 3 -> -1/3; overlap: IoU 1/7, union 7, hull 9 -> 1/7 - 2/9.
    assert giou.tolist() == pytest.approx([-1 / 3, 1 / 7 - 2 / 9, 1.0])
    iou = paired_box_iou_torch(a, b)[0].tolist()
    assert iou == pytest.approx([0.0, 1 / 7, 1.0])
    assert iou == pytest.approx(box_iou(a.numpy(), b.numpy()).diagonal().tolist())  # the numpy twin agrees


def test_box_format_round_trip():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    assert xyxy_to_cxcywh_torch(boxes)[0].tolist() == pytest.approx([0.3, 0.55, 0.4, 0.7])
    assert cxcywh_to_xyxy_torch(xyxy_to_cxcywh_torch(boxes))[0].tolist() == pytest.approx(boxes[0].tolist())
    assert cxcywh_to_xyxy(xyxy_to_cxcywh_torch(boxes).numpy())[0].tolist() == pytest.approx(boxes[0].tolist())


def test_infer_grid():
    assert infer_grid(4 * 16, 4) == (4, 4, 4)
    assert infer_grid(32, 4) == (2, 4, 4)  # tubelet 2
    with pytest.raises(ValueError, match="30 scene tokens"):
        infer_grid(30, 4)


def test_metrics_follow_the_trajectory_protocol():
    target = torch.tensor([[[0, 0, 2, 2], [0, 0, 1, 1]],
                           [[1, 1, 3, 3], [0, 0, 1, 1]],
                           [[0, 0, 1, 1], [0, 0, 1, 1]]], dtype=torch.float)
    pred = target.clone()
    pred[1, 0] = torch.tensor([0.0, 0, 2, 2])  # IoU 1/7 on the only present frame
    pred[1, 1] = torch.tensor([5.0, 5, 6, 6])  # absent frame: ignored
    present = torch.tensor([[True, True], [True, False], [False, False]])
    metrics = grounding_metrics(pred, target, present)
    assert metrics["num_instances"] == 2
    assert metrics["iou@0.5"] == 50.0 and metrics["iou@0.9"] == 50.0
    assert metrics["miou"] == pytest.approx((1 + 1 / 7) / 2 * 100)


def test_loss_ignores_absent_frames_and_is_zero_for_perfect_boxes():
    target = torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.9]]])
    pred = xyxy_to_cxcywh_torch(target).clone()
    pred[0, 1] = 0.9
    losses = grounding_loss(pred, target, torch.tensor([[True, False]]))
    assert float(losses["loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(grounding_loss(pred, target, torch.tensor([[True, True]]))["loss"]) > 0.5


def planted_instances(n: int, seed: int, text_dim=16, width=32, grid=(2, 4, 4)):
    """Random scene tokens with the caption's signature planted at one cell per token frame."""
    gen = torch.Generator().manual_seed(seed)
    signature = torch.randn(text_dim, width, generator=torch.Generator().manual_seed(99))
    t, h, w = grid
    text = torch.randn(n, text_dim, generator=gen)
    tokens = torch.randn(n, t, h * w, width, generator=gen)
    cells = torch.randint(0, h * w, (n, t), generator=gen)
    rows = torch.arange(n)[:, None]
    tokens[rows, torch.arange(t), cells] += 3 * (text @ signature)[:, None]
    cx, cy = (cells % w + 0.5) / w, (cells // w + 0.5) / h
    boxes = torch.stack([cx - 0.125, cy - 0.125, cx + 0.125, cy + 0.125], -1)
    return text, tokens.reshape(n, t * h * w, width), boxes.repeat_interleave(2, dim=1)


def test_head_learns_a_planted_mapping():
    """Fresh random scenes every step: only finding the caption's cell in the tokens lowers the loss."""
    torch.manual_seed(0)
    head = GroundingHead(16, 32, hidden_dim=64)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for step in range(200):
        text, tokens, boxes = planted_instances(64, seed=100 + step)
        present = torch.ones(boxes.shape[:2], dtype=torch.bool)
        loss = grounding_loss(head(text, tokens, num_frames=4).boxes, boxes, present)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    text, tokens, boxes = planted_instances(64, seed=1)
    with torch.no_grad():
        out = head(text, tokens, num_frames=4)
    assert out.attention.shape == (64, 2, 4, 4)
    assert grounding_metrics(cxcywh_to_xyxy_torch(out.boxes), boxes, present)["iou@0.5"] > 80


class PatchModel(nn.Module):
    """Stand-in with the InstAP encoder interface the grounding loop uses."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv3d(3, 24, kernel_size=(1, 4, 4), stride=(1, 4, 4))
        self.words = nn.Embedding(10, 12)

    def scene_tokens(self, video):
        return self.patch(video).flatten(2).transpose(1, 2)

    def encode_text(self, ids, mask):
        return nn.functional.normalize((self.words(ids) * mask[..., None]).sum(1), dim=-1)


def square_batches(count: int, seed: int, frames: int = 2):
    """Batches of two 16 x 16 samples of `frames` frames (1: images), each with a square and its box."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        video = torch.zeros(2, 3, frames, 16, 16)
        corners = torch.randint(0, 12, (2, 2), generator=gen)
        for b, (x, y) in enumerate(corners.tolist()):
            video[b, :, :, y:y + 4, x:x + 4] = 1.0
        box = torch.cat([corners, corners + 4], dim=1).float() / 16
        batches.append({"video": video, "inst_text_ids": torch.ones(2, 3, dtype=torch.long),
                        "inst_text_mask": torch.ones(2, 3, dtype=torch.long),
                        "inst_sample_index": torch.tensor([0, 1]),
                        "inst_boxes": box[:, None].expand(2, frames, 4).clone(),
                        "inst_present": torch.ones(2, frames, dtype=torch.bool)})
    return batches


@pytest.mark.parametrize("freeze", [True, False])
def test_train_loop_against_a_model(freeze):
    torch.manual_seed(0)
    model = PatchModel()
    before = model.patch.weight.detach().clone()
    cfg = GroundingConfig(enabled=True, steps=120, lr=3e-3, hidden_dim=32, freeze_backbone=freeze)
    head, losses = train_grounding_head(model, square_batches(8, seed=0), cfg)
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])
    assert torch.equal(model.patch.weight, before) == freeze
    metrics = evaluate_grounding_head(model, head, square_batches(4, seed=1), cfg)
    assert metrics["num_instances"] == 8 and set(metrics) >= {"iou@0.5", "iou@0.75", "miou"}


def test_train_split_without_instances_is_an_error():
    batch = square_batches(1, seed=0)[0] | {"inst_sample_index": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(ValueError, match="no instances"):
        train_grounding_head(PatchModel(), [batch], GroundingConfig(steps=2))


def test_feature_cache_keeps_one_bf16_scene_per_sample_within_its_budget():
    model = PatchModel()
    batches = square_batches(6, seed=0)  # 12 samples of one instance, 2 x 16 = 32 tokens x 24 channels
    per_sample = 2 * 16 * 24
    budget_mb = 5 * per_sample * 2 / 2**20  # five samples' scene tokens in bf16
    (cache,) = cache_features(model, batches, GroundingConfig(cache_mb=budget_mb), lambda b: b).values()
    assert cache.scenes.dtype == torch.bfloat16 and cache.scenes.device.type == "cpu"
    assert cache.scenes.numel() == 5 * per_sample and cache.scene_bytes <= budget_mb * 2**20
    assert len(cache) == 5 and cache.scene_of.tolist() == [0, 1, 2, 3, 4]
    # Two instances of one sample share its scene row; minibatches expand it per instance, in float32.
    shared = [square_batches(1, seed=2)[0] | {"inst_sample_index": torch.tensor([0, 0])}]
    (cache,) = cache_features(model, shared, GroundingConfig(), lambda b: b).values()
    assert cache.scenes.shape[0] == 1 and len(cache) == 2
    text, tokens, boxes, present = cache.minibatch(torch.tensor([1, 0]), torch.device("cpu"))
    assert tokens.shape == (2, 32, 24) and tokens.dtype == torch.float32 and torch.equal(tokens[0], tokens[1])
    with torch.no_grad():
        expected = model.scene_tokens(shared[0]["video"])[0].bfloat16().float()
    assert torch.equal(tokens[0], expected)
    with pytest.raises(ValueError, match="cache_mb"):
        cache_features(model, batches, GroundingConfig(cache_mb=1e-6), lambda b: b)


@pytest.mark.parametrize("freeze", [True, False])
def test_grounding_on_a_split_of_image_and_video_batches(freeze):
    """Images are 1-frame samples: their scene tokens and boxes do not stack with videos' (T = 2)."""
    torch.manual_seed(0)
    model = PatchModel()
    mixed = [b for pair in zip(square_batches(4, seed=0), square_batches(4, seed=3, frames=1), strict=True)
             for b in pair]
    cfg = GroundingConfig(enabled=True, steps=40, lr=3e-3, hidden_dim=32, batch_size=4,
                          freeze_backbone=freeze)
    if freeze:
        caches = cache_features(model, mixed, cfg, lambda b: b)
        assert sorted(caches) == [1, 2] and [len(caches[t]) for t in (1, 2)] == [8, 8]
        assert caches[1].scenes.shape[1:] == (16, 24) and caches[2].scenes.shape[1:] == (32, 24)
    head, losses = train_grounding_head(model, mixed, cfg)
    assert len(losses) == 40 and all(math.isfinite(loss) for loss in losses)
    evaluation = [*square_batches(2, seed=1), *square_batches(3, seed=2, frames=1)]
    metrics = evaluate_grounding_head(model, head, evaluation, cfg)
    assert metrics["num_instances"] == 10 and 0 <= metrics["miou"] <= 100
