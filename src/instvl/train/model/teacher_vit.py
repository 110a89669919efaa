"""A randomly initialised image ViT teacher (`kind: vit_random`) for offline and CPU runs.

It has no pretrained knowledge, so aligning to it only teaches the student to imitate a fixed random
feature map; its purpose is to exercise the whole teacher-student path where CLIP weights are absent.
"""

from typing import Literal, cast

import torch
from pydantic import model_validator
from torch import Tensor, nn

from instvl.config import BaseConfig
from instvl.train.model.teacher import Teacher, class_attention
from instvl.train.model.vit import Block, init_weights, sincos_1d


def sincos_2d(width: int, grid_h: int, grid_w: int) -> Tensor:
    """[H*W, width] fixed 2-D sin-cos table, half of the channels per axis."""
    h = sincos_1d(width // 2, torch.arange(grid_h))[:, None].expand(grid_h, grid_w, width // 2)
    w = sincos_1d(width // 2, torch.arange(grid_w))[None, :].expand(grid_h, grid_w, width // 2)
    return torch.cat([h, w], dim=-1).reshape(-1, width)


class RandomViTTeacher(Teacher):
    """Image ViT with a class token and sin-cos positions (any grid), random weights, seeded."""

    class Config(BaseConfig):
        kind: Literal["vit_random"] = "vit_random"
        width: int = 96
        depth: int = 2
        heads: int = 4
        patch_size: int = 16
        mlp_ratio: float = 4.0
        seed: int = 0
        """Seed of the random weights, so that a run's targets do not depend on the global RNG."""

        @model_validator(mode="after")
        def _check_width(self) -> "RandomViTTeacher.Config":
            if self.width % self.heads or self.width % 4:
                raise ValueError(f"teacher.width {self.width} must divide by teacher.heads and by 4")
            return self

        def build(self) -> "RandomViTTeacher":
            return RandomViTTeacher(self)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size, self.depth, self.feature_dim = cfg.patch_size, cfg.depth, cfg.width
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(cfg.seed)
            self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
            self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
            self.blocks = nn.ModuleList(
                Block(cfg.width, cfg.heads, cfg.mlp_ratio, 0.0, 1e-6) for _ in range(cfg.depth)
            )
            self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
            self.apply(init_weights)

    def encode_frames(self, frames: Tensor, num_layers: int) -> tuple[list[Tensor], Tensor]:
        patches = self.patch_embed(frames)
        grid_h, grid_w = patches.shape[-2:]
        x = patches.flatten(2).transpose(1, 2)
        x = x + sincos_2d(self.cfg.width, grid_h, grid_w).to(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x), x], dim=1)
        layers = []
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:
                attention = self._last_attention(cast(Block, block), x)
            x = block(x)
            if i >= len(self.blocks) - num_layers:
                layers.append(self.norm(x)[:, 1:])
        return layers, attention

    def _last_attention(self, block: Block, x: Tensor) -> Tensor:
        """CLS-to-patch attention of `block` on input `x`, recomputed because SDPA does not return it."""
        q, k, _ = block.attn.qkv(block.norm1(x)).chunk(3, dim=-1)
        heads = self.cfg.heads
        return class_attention(q[:, 0], k, heads, (self.cfg.width // heads) ** -0.5)
