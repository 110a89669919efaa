"""Spatial-temporal grounding: a text-conditioned 3-layer MLP box head, its L1 + GIoU loss and IoU@K.

Input per instance: its caption's text embedding and the scene tokens of its video. The head
projects the text to a query, attends over each frame's scene tokens (softmax over the frame's
spatial grid), and feeds the attended feature, the query and the attention's spatial mean and
spread to a 3-layer MLP that outputs one (cx, cy, w, h) box per frame through a sigmoid. With a
tubelet size > 1 a token frame covers several video frames; its box is repeated for each of them.

Evaluation protocol (vIoU-style): for each instance, the IoU of the predicted and ground-truth boxes
is computed on every sampled frame where the instance is present and averaged over those frames;
IoU@theta is the percentage of instances whose mean IoU is at least theta (theta = 0.5/0.7/0.75/0.9,
the paper's 50/70/90 plus 75), and mIoU is the mean over instances. Instances never present in the
sampled frames are skipped.
"""

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from instvl.config import BaseConfig

IOU_THRESHOLDS = (0.5, 0.7, 0.75, 0.9)
log = logging.getLogger(__name__)


# Differentiable (torch) twins of instvl.geometry for the box loss. They take boxes of any leading shape
# and pair them element-wise, where geometry.box_iou (numpy) scores every box against every other.
# Evaluation uses the same twins, so the reported IoU is the one the loss optimises.


def cxcywh_to_xyxy_torch(boxes: torch.Tensor) -> torch.Tensor:
    """Torch twin of `geometry.cxcywh_to_xyxy`: centre-size boxes (..., 4) to corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh_torch(boxes: torch.Tensor) -> torch.Tensor:
    """Corner boxes (..., 4) to centre-size boxes, the inverse of `cxcywh_to_xyxy_torch`."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def paired_box_iou_torch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of `geometry.box_iou` for matched pairs: element-wise IoU of xyxy boxes a[..., 4] and
    b[..., 4] (not the (N, M) matrix), and their union area."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = _area(a) + _area(b) - inter
    return inter / union.clamp(min=1e-9), union


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU = IoU - (hull - union) / hull, in [-1, 1]; 1 for identical boxes."""
    iou, union = paired_box_iou_torch(a, b)
    hull_size = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    hull = hull_size.clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def infer_grid(num_tokens: int, num_frames: int) -> tuple[int, int, int]:
    """(t, h, w) of scene tokens, assuming square frames and the smallest tubelet that fits."""
    for tubelet in range(1, num_frames + 1):
        if num_frames % tubelet:
            continue
        per_frame, rest = divmod(num_tokens, num_frames // tubelet)
        side = math.isqrt(per_frame)
        if rest == 0 and side * side == per_frame:
            return num_frames // tubelet, side, side
    raise ValueError(f"cannot lay {num_tokens} scene tokens out as frames x square grid for {num_frames} "
                     f"frames; pass the grid explicitly")


@dataclass
class GroundingOutput:
    """Boxes (cx, cy, w, h) per video frame [N, T, 4] and the text-to-scene attention [N, t, h, w]."""

    boxes: torch.Tensor
    attention: torch.Tensor


class GroundingHead(nn.Module):
    """Text-conditioned attention pooling over each frame's scene tokens, then a 3-layer MLP box head."""

    def __init__(self, text_dim: int, token_dim: int, hidden_dim: int = 256):
        super().__init__()
        self.query = nn.Linear(text_dim, token_dim)
        self.key = nn.Linear(token_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        # Cosine attention with a learnable sharpness: a near-uniform softmax at start hides where the
        # text matches, so the scale starts high enough for a match to stand out.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.mlp = nn.Sequential(
            nn.Linear(2 * token_dim + 4, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 4),
        )

    def forward(self, text: torch.Tensor, tokens: torch.Tensor, num_frames: int,
                grid: tuple[int, int, int] | None = None) -> GroundingOutput:
        t, h, w = grid or infer_grid(tokens.shape[1], num_frames)
        frames = self.norm(tokens).reshape(tokens.shape[0], t, h * w, -1)
        query = self.query(text)
        keys = F.normalize(self.key(frames), dim=-1)
        logits = torch.einsum("nthc,nc->nth", keys, F.normalize(query, dim=-1)) * self.log_scale.exp()
        attention = logits.softmax(dim=-1)
        pooled = torch.einsum("nth,nthc->ntc", attention, frames)
        centres = _token_centres(h, w, tokens.device)
        mean_xy = attention @ centres
        spread = (attention @ centres.square() - mean_xy.square()).clamp(min=1e-6).sqrt()
        features = torch.cat([pooled, query[:, None].expand(-1, t, -1), mean_xy, spread], dim=-1)
        # The box centre is anchored at the attention's centre of mass (the MLP predicts an offset in
        # logit space): the box loss then reaches the attention directly instead of only through an
        # MLP that, early on, ignores its spatial inputs.
        out = self.mlp(features)
        centre = (torch.logit(mean_xy.clamp(1e-4, 1 - 1e-4)) + out[..., :2]).sigmoid()
        boxes = torch.cat([centre, out[..., 2:].sigmoid()], dim=-1)
        frames = torch.arange(num_frames, device=boxes.device)
        frame_of = torch.div(frames * t, num_frames, rounding_mode="floor")
        return GroundingOutput(boxes[:, frame_of], attention.reshape(-1, t, h, w))


def _token_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h,
                            (torch.arange(w, device=device) + 0.5) / w, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def grounding_loss(pred_cxcywh: torch.Tensor, target_xyxy: torch.Tensor, present: torch.Tensor,
                   w_l1: float = 5.0, w_giou: float = 2.0) -> dict[str, torch.Tensor]:
    """DETR-style L1 (on cx, cy, w, h) + (1 - GIoU), averaged over the frames where the instance is there."""
    mask = present.bool()
    if not mask.any():
        zero = pred_cxcywh.sum() * 0.0
        return {"loss": zero, "l1": zero, "giou": zero}
    pred, target = pred_cxcywh[mask], target_xyxy[mask].float()
    l1 = F.l1_loss(pred, xyxy_to_cxcywh_torch(target), reduction="none").sum(-1).mean()
    giou = (1 - generalized_box_iou(cxcywh_to_xyxy_torch(pred), target)).mean()
    return {"loss": w_l1 * l1 + w_giou * giou, "l1": l1, "giou": giou}


def trajectory_iou(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean per-frame IoU over each instance's present frames [N]; NaN where it is never present."""
    iou, _ = paired_box_iou_torch(pred_xyxy.float(), target_xyxy.float())
    mask = present.bool()
    frames = mask.sum(-1)
    total = (iou * mask).sum(-1)
    return torch.where(frames > 0, total / frames.clamp(min=1), torch.full_like(total, float("nan")))


def grounding_metrics(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, present: torch.Tensor,
                      thresholds: tuple[float, ...] = IOU_THRESHOLDS) -> dict[str, float]:
    """IoU@theta (percent of instances) and mIoU under the protocol in the module docstring."""
    return iou_metrics(trajectory_iou(pred_xyxy, target_xyxy, present), thresholds)


def iou_metrics(per_instance: torch.Tensor,
                thresholds: tuple[float, ...] = IOU_THRESHOLDS) -> dict[str, float]:
    """IoU@theta and mIoU from per-instance trajectory IoUs [N] (NaN: never present, not counted)."""
    valid = per_instance[~per_instance.isnan()]
    metrics: dict[str, float] = {"num_instances": float(valid.numel())}
    for theta in thresholds:
        metrics[f"iou@{theta:g}"] = float((valid >= theta).float().mean() * 100) if valid.numel() else 0.0
    metrics["miou"] = float(valid.mean() * 100) if valid.numel() else 0.0
    return metrics


class GroundingConfig(BaseConfig):
    """Grounding evaluation: train the box head on the train split, then score it on the eval split."""

    enabled: bool = False
    """Run the grounding evaluation."""
    freeze_backbone: bool = True
    """Keep the pretrained encoders fixed and train only the head (False fine-tunes them too)."""
    steps: int = 200
    """Optimisation steps of the head on the train split."""
    lr: float = 1e-3
    """Learning rate of the head."""
    backbone_lr: float = 1e-5
    """Learning rate of the encoders when `freeze_backbone` is False."""
    hidden_dim: int = 256
    """Width of the 3-layer MLP."""
    w_l1: float = 5.0
    """Weight of the L1 box loss."""
    w_giou: float = 2.0
    """Weight of the GIoU loss."""
    thresholds: tuple[float, ...] = IOU_THRESHOLDS
    """IoU thresholds reported as IoU@theta."""
    train_split: str | None = "train"
    """Split of the data root the head is trained on (None: all samples)."""
    batch_size: int = 32
    """Instances per step when the encoders are frozen (their features are cached)."""
    max_cached_instances: int = 4096
    """With frozen encoders, train on at most this many instances' features, computed once."""
    cache_mb: float = 4096.0
    """With frozen encoders, the memory the cached scene tokens may take; caching stops before it would be
    exceeded. They are kept once per sample, shared by its instances: ViT-B/16, 16 frames at 224 px, bf16
    is 16 x 196 x 768 x 2 B = 4.8 MB a sample (the former per-instance fp32 cache: 9.6 MB an instance)."""
    cache_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Storage type of the cached scene tokens (the head computes in float32)."""
    cache_device: Literal["cpu", "model"] = "cpu"
    """Where the cache lives: host memory (minibatches are moved over) or the model's device."""
    seed: int = 0

    def build(self, text_dim: int, token_dim: int) -> GroundingHead:
        return GroundingHead(text_dim, token_dim, self.hidden_dim)


Batch = dict[str, Any]
"""A collated batch (the contract is in `instvl.train.batch.collate`)."""


class Backbone(Protocol):
    """What the head needs of a model: caption embeddings and scene tokens (InstAP has both)."""

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def scene_tokens(self, video: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def instance_inputs(model: Backbone, batch: Batch, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per instance of a batch: its caption embedding [N, D] and its video's scene tokens [N, L, W]."""
    with torch.set_grad_enabled(with_grad):
        text = model.encode_text(batch["inst_text_ids"], batch["inst_text_mask"])
        scene = model.scene_tokens(batch["video"])
    return text, scene[batch["inst_sample_index"]]


def predict_boxes(model: Backbone, head: GroundingHead, batch: Batch,
                  with_grad: bool = False) -> GroundingOutput:
    """The head's per-frame boxes and attention for every instance of a batch."""
    text, tokens = instance_inputs(model, batch, with_grad)
    with torch.set_grad_enabled(with_grad or head.training):
        return head(text, tokens, batch["inst_boxes"].shape[1])


def _cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Repeat a finite loader; batches without instances teach nothing and are skipped."""
    while True:
        seen = 0
        for batch in batches:
            if batch["inst_sample_index"].numel():
                seen += 1
                yield batch
        if not seen:
            raise ValueError("the grounding train split has no instances")


Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(caption embeddings, scene tokens, true boxes xyxy, present) of a set of instances."""


@dataclass
class FeatureCache:
    """Frozen-encoder inputs of the head, computed once: per instance its caption embedding, boxes,
    presence and scene row; per sample (shared by its instances) its scene tokens, in `cfg.cache_dtype`
    on `cfg.cache_device`, within `cfg.cache_mb`."""

    text: torch.Tensor
    boxes: torch.Tensor
    present: torch.Tensor
    scene_of: torch.Tensor
    scenes: torch.Tensor

    def __len__(self) -> int:
        return int(self.text.shape[0])

    @property
    def scene_bytes(self) -> int:
        return self.scenes.numel() * self.scenes.element_size()

    def minibatch(self, index: torch.Tensor, device: torch.device) -> Inputs:
        """Instances `index` with their scene tokens expanded per instance, as float32 on `device`."""
        index = index.to(self.text.device)
        rows, inverse = torch.unique(self.scene_of[index], return_inverse=True)
        scenes = self.scenes[rows.to(self.scenes.device)].to(device, torch.float32)
        return (self.text[index].to(device), scenes[inverse.to(device)], self.boxes[index].to(device),
                self.present[index].to(device))


def cache_features(model: Backbone, batches: Iterable[Batch], cfg: GroundingConfig,
                   to_device: Callable[[Batch], Batch]) -> dict[int, FeatureCache]:
    """Embed instances of `batches` once, up to `max_cached_instances` and `cache_mb` of scene tokens.

    One cache per frame count T (images are 1-frame samples, videos T-frame ones: their scene tokens and
    boxes have other shapes), keyed by T.
    """
    dtype = getattr(torch, cfg.cache_dtype)
    budget = int(cfg.cache_mb * 2**20)
    names = ("text", "boxes", "present", "scene_of", "scenes")
    groups: dict[int, dict[str, list[torch.Tensor]]] = {}
    instances = used = samples = 0
    full = False
    for raw in batches:  # one pass over a finite loader, or up to the limits of an endless one
        batch = to_device(raw)
        index = batch["inst_sample_index"]
        if not index.numel():
            continue
        with torch.no_grad():
            text = model.encode_text(batch["inst_text_ids"], batch["inst_text_mask"])
            scene = model.scene_tokens(batch["video"])
        store = torch.device("cpu") if cfg.cache_device == "cpu" else scene.device
        columns = groups.setdefault(int(batch["inst_boxes"].shape[1]), {k: [] for k in names})
        for row in index.unique().tolist():
            size = scene[row].numel() * dtype.itemsize
            mine = (index == row).nonzero().flatten()
            if used + size > budget or instances >= cfg.max_cached_instances:
                full = True
                break
            columns["scenes"].append(scene[row][None].to(store, dtype))
            columns["text"].append(text[mine].float().to(store))
            columns["boxes"].append(batch["inst_boxes"][mine].to(store))
            columns["present"].append(batch["inst_present"][mine].to(store))
            row_in_group = len(columns["scenes"]) - 1
            columns["scene_of"].append(torch.full((len(mine),), row_in_group, dtype=torch.long, device=store))
            used, instances, samples = used + size, instances + len(mine), samples + 1
        if full:
            break
    if not samples:
        raise ValueError("the grounding train split has no instances" if not full else
                         f"grounding.cache_mb={cfg.cache_mb} cannot hold the scene tokens of one sample")
    if full:
        log.info("grounding cache full: %d instances of %d samples, %.0f MB of scene tokens", instances,
                 samples, used / 2**20)
    return {frames: FeatureCache(*(torch.cat(columns[k]) for k in names))
            for frames, columns in groups.items() if columns["scenes"]}


def _cached_inputs(model: Backbone, batches: Iterable[Batch], cfg: GroundingConfig,
                   to_device: Callable[[Batch], Batch]) -> Iterator[Inputs]:
    """Frozen encoders: embed once (`cache_features`), then deal shuffled minibatches of the cache, each
    from one frame count (image and video instances do not stack)."""
    caches = list(cache_features(model, batches, cfg, to_device).values())
    device = next(iter(model.parameters())).device
    generator = torch.Generator().manual_seed(cfg.seed)
    while True:
        dealt = [(cache, index) for cache in caches
                 for index in torch.randperm(len(cache), generator=generator).split(cfg.batch_size)]
        for k in torch.randperm(len(dealt), generator=generator).tolist():
            cache, index = dealt[k]
            yield cache.minibatch(index, device)


def _streamed_inputs(model: Backbone, batches: Iterable[Batch],
                     to_device: Callable[[Batch], Batch]) -> Iterator[Inputs]:
    """Fine-tuned encoders: fresh features, with gradients, for every batch."""
    for raw in _cycle(batches):
        batch = to_device(raw)
        yield (*instance_inputs(model, batch, with_grad=True), batch["inst_boxes"], batch["inst_present"])


def train_grounding_head(model: Backbone, batches: Iterable[Batch], cfg: GroundingConfig,
                         to_device: Callable[[Batch], Batch] = lambda b: b,
                         ) -> tuple[GroundingHead, list[float]]:
    """Fit a fresh head for `cfg.steps` steps; returns it (in eval mode) and the loss of every step."""
    stream = (_cached_inputs(model, batches, cfg, to_device) if cfg.freeze_backbone
              else _streamed_inputs(model, batches, to_device))
    inputs = next(stream)
    head = cfg.build(inputs[0].shape[-1], inputs[1].shape[-1]).to(inputs[1].device).train()
    groups = [{"params": head.parameters(), "lr": cfg.lr}]
    if not cfg.freeze_backbone:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    losses = []
    for step in range(cfg.steps):
        text, tokens, boxes, present = inputs if step == 0 else next(stream)
        out = head(text, tokens, boxes.shape[1])
        loss = grounding_loss(out.boxes, boxes, present, cfg.w_l1, cfg.w_giou)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    log.info("grounding head: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], cfg.steps)
    return head.eval(), losses


@torch.no_grad()
def evaluate_grounding_head(model: Backbone, head: GroundingHead, batches: Iterable[Batch],
                            cfg: GroundingConfig,
                            to_device: Callable[[Batch], Batch] = lambda b: b) -> dict[str, float]:
    """IoU@theta and mIoU of the head over every instance of `batches`."""
    ious = [torch.zeros(0)]
    for raw in batches:
        batch = to_device(raw)
        if not batch["inst_sample_index"].numel():
            continue
        pred = cxcywh_to_xyxy_torch(predict_boxes(model, head, batch).boxes)
        # per-instance IoU per batch: image (T = 1) and video batches have other frame counts
        ious.append(trajectory_iou(pred, batch["inst_boxes"], batch["inst_present"]).cpu())
    return iou_metrics(torch.cat(ious), cfg.thresholds)
