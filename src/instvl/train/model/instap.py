"""InstAP: the student video ViT, its frozen teacher, the text tower and the instance branch, tied together,
and `InstAPConfig`, the typed description of one (student, teacher, text tower, masking, losses).

Training (`forward`): the teacher sees the full clip and ranks its tokens; the student sees only the
visible ones (ratio `masking.ratio` for videos, `masking.image_ratio` for images, which are 1-frame
clips; a batch holds one kind). Its last layers are aligned with the teacher (L_rec); the mean of its
visible tokens is the clip embedding for the global InfoNCE (L_glob); each instance crop clip
(`data.crop_frames` frames, unmasked unless `instance.crop_mask_ratio` > 0) is encoded by the same
student, its tokens cross-attend to the visible scene tokens of their sample, and the pooled result,
projected by the shared W_v, meets the instance captions in the instance InfoNCE (L_inst).
Evaluation (`encode_*`) uses the full, unmasked token set.

The config defaults are the CPU-sized `tiny` model: 64x64 clips of 4 frames in tubelets of 2 and
patches of 16 (2 x 16 = 32 tokens), width 96, a random ViT teacher and the real MiniLM text tower.
Full presets set e.g. vision width/depth/heads 768/12/12 (ViT-B/16) or 1024/24/16 (ViT-L), tubelet 1
and a `clip_hf` teacher such as openai/clip-vit-large-patch14, whose grid is resized to match the student.
"""

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Discriminator, Field, Tag, model_validator
from torch import Tensor, nn

from instvl.config import BaseConfig
from instvl.train.losses import (
    LearnableTemperature,
    alignment_loss,
    global_contrastive,
    instance_contrastive,
)
from instvl.train.model.instance import GlobalLocalAttention, InstanceConfig
from instvl.train.model.masking import MaskingConfig, select_visible
from instvl.train.model.teacher_clip import CLIPTeacher
from instvl.train.model.teacher_vit import RandomViTTeacher
from instvl.train.model.text import TextConfig, enable_checkpointing
from instvl.train.model.vit import VisionConfig


def _teacher_kind(value: Any) -> str:
    """The teacher's `kind`, 'vit_random' when a YAML section leaves it out."""
    if isinstance(value, dict):
        return value.get("kind", "vit_random")
    return getattr(value, "kind", "vit_random")


TeacherConfig = Annotated[
    Annotated[RandomViTTeacher.Config, Tag("vit_random")] | Annotated[CLIPTeacher.Config, Tag("clip_hf")],
    Discriminator(_teacher_kind),
]


class LossConfig(BaseConfig):
    """Weights and switches of Total = w_rec * L_rec + w_glob * L_glob + w_inst * L_inst."""

    w_rec: float = Field(1.0, ge=0)
    w_glob: float = Field(1.0, ge=0)
    w_inst: float = Field(0.1, ge=0)
    """Instance loss weight (the paper's lambda_inst = 0.1)."""
    inst_loss: bool = True
    """False drops the instance branch from training (the L_rec + L_global ablation row)."""
    inst_temperature: Literal["separate", "shared"] = "separate"
    """Its own learnable temperature for L_inst (paper) or the global one (ablation baseline)."""
    inst_as_global: bool = False
    """The paper's same-data control "UMT (InstVL; g+i)": each instance caption is paired with the
    embedding of its whole (masked) clip instead of its instance embedding, i.e. it becomes one more
    global caption of the clip; crops and cross-attention take no part. Weighted by w_inst (needs
    inst_loss; set inst_temperature=shared for UMT's single temperature)."""
    align_layers: int = Field(2, ge=1)
    """How many last student/teacher layers L_rec aligns (UMT: 6)."""
    temp_init: float = 0.07
    temp_min: float = 1e-3
    temp_max: float = 0.5

    @model_validator(mode="after")
    def _check_switches(self) -> "LossConfig":
        if self.inst_as_global and not self.inst_loss:
            raise ValueError("loss.inst_as_global needs loss.inst_loss=true (it uses the instance captions)")
        return self


class InstAPConfig(BaseConfig):
    """An InstAP model; `build()` constructs it (loading the text tower and a CLIP teacher if named)."""

    vision: VisionConfig = VisionConfig()
    teacher: TeacherConfig = RandomViTTeacher.Config()
    text: TextConfig = TextConfig()
    masking: MaskingConfig = MaskingConfig()
    instance: InstanceConfig = InstanceConfig()
    loss: LossConfig = LossConfig()
    embed_dim: int = Field(256, ge=8)
    """Size of the shared video/text/instance embedding space (W_v, W_t outputs)."""
    grad_checkpointing: bool = False
    """Recompute student blocks (and BERT layers) in the backward pass to save activation memory."""

    @model_validator(mode="after")
    def _check_layers(self) -> "InstAPConfig":
        if self.loss.align_layers > self.vision.depth:
            raise ValueError(f"loss.align_layers={self.loss.align_layers} exceeds "
                             f"vision.depth={self.vision.depth}")
        teacher_depth = getattr(self.teacher, "depth", None)
        if teacher_depth is not None and self.loss.align_layers > teacher_depth:
            raise ValueError(f"loss.align_layers={self.loss.align_layers} exceeds "
                             f"teacher.depth={teacher_depth}")
        heads = self.instance.heads or self.vision.heads
        if self.vision.width % heads:
            raise ValueError(f"instance.heads={heads} does not divide vision.width={self.vision.width}")
        return self

    def build(self) -> "InstAP":
        return InstAP(self)


class InstAP(nn.Module):
    """The InstAP model; see the module docstring for the data flow."""

    def __init__(self, cfg: InstAPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, layers = cfg.vision.width, cfg.loss.align_layers
        self.student = cfg.vision.build(cfg.grad_checkpointing)
        self.teacher = cfg.teacher.build().requires_grad_(False).eval()
        if layers > self.teacher.depth:
            raise ValueError(f"loss.align_layers={layers} exceeds the teacher's depth {self.teacher.depth}")
        feature_dim = self.teacher.feature_dim
        self.align_heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, feature_dim)) for _ in range(layers)
        )
        self.pool_norm = nn.LayerNorm(width)
        self.vision_proj = nn.Linear(width, cfg.embed_dim)
        self.text = cfg.text.build()
        if cfg.grad_checkpointing:
            enable_checkpointing(self.text)
        self.text_proj = nn.Linear(self.text.hidden_size, cfg.embed_dim)
        self.instance_attn = GlobalLocalAttention(width, cfg.instance.heads or cfg.vision.heads, cfg.instance)
        temp = (cfg.loss.temp_init, cfg.loss.temp_min, cfg.loss.temp_max)
        self.temp_glob = LearnableTemperature(*temp)
        self.temp_inst = LearnableTemperature(*temp) if cfg.loss.inst_temperature == "separate" else None

    def train(self, mode: bool = True) -> "InstAP":
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout/stochastic depth in the targets
        return self

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Every trainable parameter, i.e. all but the teacher's and those of frozen text layers."""
        for name, param in self.named_parameters():
            if not name.startswith("teacher.") and param.requires_grad:
                yield param

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Losses of one batch (see the batch contract in `instvl.train.data`)."""
        _check_batch(batch, self.cfg.loss.inst_loss)
        image = batch["video"].shape[2] == 1  # a batch holds only images or only videos
        video = self.student.as_clip(batch["video"])
        grid_t, grid_h, grid_w = self.student.grid(video)
        num_layers = self.cfg.loss.align_layers
        targets = self.teacher(video, num_layers, (grid_h, grid_w), self.cfg.vision.tubelet_size)
        keep = select_visible(self.cfg.masking, video.shape[0], grid_t, grid_h * grid_w, targets.attention,
                              ratio=self.cfg.masking.ratio_for(image))
        visible = self.student(video, keep, return_layers=num_layers)
        predictions = [head(h) for head, h in zip(self.align_heads, visible.layers, strict=True)]
        l_rec = alignment_loss(predictions, [_take(t, keep) for t in targets.features])
        temp_glob = self.temp_glob()
        text = self.encode_text(batch["text_ids"], batch["text_mask"])
        clip = self._project_video(visible.tokens)
        l_glob = global_contrastive(clip, text, temp_glob)
        temp_inst = temp_glob if self.temp_inst is None else self.temp_inst()
        l_inst = self._instance_loss(batch, visible.tokens, temp_inst,
                                     clip if self.cfg.loss.inst_as_global else None)
        w = self.cfg.loss
        total = w.w_rec * l_rec + w.w_glob * l_glob + w.w_inst * l_inst
        logged = {"l_rec": l_rec, "l_glob": l_glob, "l_inst": l_inst, "temp_glob": temp_glob,
                  "temp_inst": temp_inst}
        return {"loss": total, **{k: v.detach().float() for k, v in logged.items()}}

    def _instance_loss(self, batch: Mapping[str, Any], scene: Tensor, temperature: Tensor,
                       clip: Tensor | None = None) -> Tensor:
        """L_inst; with `clip` ([B, D] clip embeddings: loss.inst_as_global) the g+i control instead."""
        # Parameters the step leaves unused still get a zero gradient, which DDP requires of every rank.
        untouched = sum(p.sum() for p in self.instance_attn.parameters()) * 0.0 + temperature * 0.0
        if not self.cfg.loss.inst_loss:
            return untouched
        crops, index = batch["inst_crops"], batch["inst_sample_index"].to(scene.device)
        ids, mask = batch["inst_text_ids"], batch["inst_text_mask"]
        if "inst_present" in batch:
            # An instance present on no sampled frame (its track lies elsewhere in the clip, or outside the
            # model's view) would be trained on a background crop: it takes no part in L_inst.
            seen = batch["inst_present"].to(crops.device).any(dim=-1)
            crops, index, ids, mask = crops[seen], index[seen.to(index.device)], ids[seen], mask[seen]
        if crops.shape[0] == 0:
            # Empty but attached to the graph: the contrastive loss may still gather from other ranks.
            empty_inst, empty_text = self.vision_proj.bias[None][:0], self.text_proj.bias[None][:0]
            return instance_contrastive(empty_inst, empty_text, index, temperature) + untouched
        if clip is not None:
            # Same captions, same batches, but scored against the whole clip: same-sample captions are
            # not each other's negatives (Eq. 8's mask), so each clip has several positive captions.
            texts = self.encode_text(ids, mask)
            return instance_contrastive(clip[index.to(clip.device)], texts, index, temperature) + untouched
        instances = self.encode_instances(crops, scene=scene, sample_index=index,
                                          crop_mask_ratio=self.cfg.instance.crop_mask_ratio)
        texts = self.encode_text(ids, mask)
        return instance_contrastive(instances, texts, index, temperature) + untouched

    def _project_video(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.vision_proj(self.pool_norm(tokens.mean(dim=1))), dim=-1)

    def scene_tokens(self, video: Tensor) -> Tensor:
        """All [B, L, W] student tokens of the unmasked clip (the grounding head reads these)."""
        return self.student(video).tokens

    def encode_video(self, video: Tensor) -> Tensor:
        """[B, D] L2-normalised clip embedding, no masking."""
        return self._project_video(self.scene_tokens(video))

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """[B, D] L2-normalised caption embedding."""
        return F.normalize(self.text_proj(self.text(ids, mask)), dim=-1)

    def encode_instances(self, crops: Tensor, video: Tensor | None = None, sample_index: Tensor | None = None,
                         scene: Tensor | None = None, crop_mask_ratio: float = 0.0) -> Tensor:
        """[N, D] L2-normalised instance embeddings of crop clips [N, 3, T, h, w] (T may be 1, or fewer
        frames than the scene's).

        Crop n attends to the scene tokens of row `sample_index[n]`, taken from `scene` [B, L, W] when
        given (e.g. precomputed for a gallery) or else computed from the unmasked `video`. With
        `crop_mask_ratio` > 0 the student sees a random subset of each crop frame's tokens (training).
        """
        if scene is None:
            if video is None:
                raise ValueError("encode_instances needs the scene: pass video or scene tokens")
            scene = self.scene_tokens(video)
        if sample_index is None:
            raise ValueError("encode_instances needs sample_index: the batch row of each crop")
        keep = None
        if crop_mask_ratio > 0:
            grid_t, grid_h, grid_w = self.student.grid(crops)
            keep = select_visible(RANDOM_MASK, crops.shape[0], grid_t, grid_h * grid_w, ratio=crop_mask_ratio,
                                  device=crops.device)
        crop_tokens = self.student(crops, keep).tokens
        pooled = self.instance_attn(crop_tokens, scene, sample_index.to(scene.device))
        return F.normalize(self.vision_proj(pooled), dim=-1)


RANDOM_MASK = MaskingConfig(kind="random")
"""How crop tokens are masked: uniformly per frame (crops have no teacher attention)."""


def _check_batch(batch: Mapping[str, Any], with_instances: bool) -> None:
    """A clear error when the batch lacks a field the losses need."""
    needed = ["video", "text_ids", "text_mask"]
    if with_instances:
        needed += ["inst_crops", "inst_text_ids", "inst_text_mask", "inst_sample_index"]
    missing = [key for key in needed if key not in batch]
    if missing:
        raise KeyError(f"InstAP batch lacks {', '.join(missing)} (has: {', '.join(sorted(batch))})")


def _take(tokens: Tensor, index: Tensor) -> Tensor:
    """Rows `index` [B, K] of `tokens` [B, L, D]."""
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
