"""The student video ViT: tubelet patch embedding, space-time position embedding, joint attention blocks.

As in UMT, there is no class token and every patch token attends to every other token in space and
time. The model can run on a subset of its tokens (`keep_index`, the visible tokens after masking) and
hands back the hidden states of its last layers, which the alignment loss compares with the teacher.
"""

from functools import lru_cache
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from instvl.config import BaseConfig


class VisionConfig(BaseConfig):
    """Shape of the student video encoder."""

    img_size: int = 64
    """Training resolution (square); any multiple of `patch_size` is accepted at run time."""
    num_frames: int = 4
    """Frames per clip at training time; sets the size of a learned temporal embedding."""
    tubelet_size: int = 2
    """Frames merged into one token (1 = per-frame tokens, as in UMT)."""
    patch_size: int = 16
    width: int = 96
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    pos_embed: Literal["sincos", "learned"] = "sincos"
    drop_path: float = 0.0
    """Stochastic depth rate of the last block (linearly increasing from 0)."""
    layer_norm_eps: float = 1e-6

    @model_validator(mode="after")
    def _check_shape(self) -> "VisionConfig":
        if self.width % self.heads:
            raise ValueError(f"vision.width {self.width} is not divisible by vision.heads {self.heads}")
        if self.width % 16:
            raise ValueError(f"vision.width {self.width} must be a multiple of 16 (space-time sin-cos table)")
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ValueError("vision.img_size must be a multiple of patch_size, num_frames of tubelet_size")
        return self

    def build(self, grad_checkpointing: bool = False) -> "VideoViT":
        return VideoViT(self, grad_checkpointing)


class ViTOutput(NamedTuple):
    tokens: Tensor
    """[B, L, W] final (normed) tokens, in the order of `keep_index` when one was given."""
    layers: list[Tensor]
    """Hidden states [B, L, W] of the last `return_layers` blocks, before the final norm."""


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """Fixed sin-cos embedding [len(positions), dim] of the given (float) positions."""
    freqs = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.double()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


@lru_cache(maxsize=32)
def sincos_3d(width: int, grid_t: int, grid_h: int, grid_w: int) -> Tensor:
    """Space-time sin-cos table [T*H*W, width]: a quarter of the channels for time, the rest for space.

    Cached per grid (clips, crops and images recur); callers must not modify the returned tensor.
    """
    dim_t = width // 4
    dim_s = (width - dim_t) // 2
    t = sincos_1d(dim_t, torch.arange(grid_t))[:, None, None].expand(grid_t, grid_h, grid_w, dim_t)
    h = sincos_1d(dim_s, torch.arange(grid_h))[None, :, None].expand(grid_t, grid_h, grid_w, dim_s)
    w = sincos_1d(dim_s, torch.arange(grid_w))[None, None, :].expand(grid_t, grid_h, grid_w, dim_s)
    return torch.cat([t, h, w], dim=-1).reshape(-1, width)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens through the fused SDPA kernel."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, drop_path: float, eps: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop_path = drop_path

    def _residual(self, x: Tensor, branch: Tensor) -> Tensor:
        if not self.training or self.drop_path == 0.0:
            return x + branch
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
        return x + branch * keep.to(branch.dtype) / (1.0 - self.drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self._residual(x, self.attn(self.norm1(x)))
        return self._residual(x, self.mlp(self.norm2(x)))


class VideoViT(nn.Module):
    """Video ViT over [B, 3, T, H, W] clips; T must be a multiple of the tubelet size."""

    def __init__(self, cfg: VisionConfig, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = grad_checkpointing
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.patch_embed = nn.Conv3d(3, cfg.width, kernel_size=kernel, stride=kernel)
        if cfg.pos_embed == "learned":
            grid = cfg.img_size // cfg.patch_size
            self.pos_space = nn.Parameter(torch.randn(1, cfg.width, grid, grid) * 0.02)
            self.pos_time = nn.Parameter(torch.randn(cfg.num_frames // cfg.tubelet_size, cfg.width) * 0.02)
        rates = [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, rate, cfg.layer_norm_eps) for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.apply(init_weights)

    def as_clip(self, video: Tensor) -> Tensor:
        """The clip as the encoder takes it: an image ([B, 3, 1, H, W]) fills one tubelet by repetition.

        With tubelets of one frame (the presets) an image is already a 1-slot clip and passes unchanged.
        """
        tubelet = self.cfg.tubelet_size
        if video.ndim == 5 and video.shape[2] == 1 and tubelet > 1:
            return video.expand(-1, -1, tubelet, -1, -1)
        return video

    def grid(self, video: Tensor) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip (an image counts as one slot), with a clear error for shapes the
        encoder cannot take."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")
        _, _, frames, height, width = self.as_clip(video).shape
        cfg = self.cfg
        if frames % cfg.tubelet_size or height % cfg.patch_size or width % cfg.patch_size:
            raise ValueError(
                f"video of {frames} frames at {height}x{width} does not fit tubelet {cfg.tubelet_size} "
                f"and patch {cfg.patch_size}"
            )
        return frames // cfg.tubelet_size, height // cfg.patch_size, width // cfg.patch_size

    def position_embedding(self, grid_t: int, grid_h: int, grid_w: int) -> Tensor:
        """[T'*H'*W', W] embedding; learned tables are interpolated to other grids (crops, images)."""
        if self.cfg.pos_embed == "sincos":
            return sincos_3d(self.cfg.width, grid_t, grid_h, grid_w).to(self.patch_embed.weight.device)
        space = F.interpolate(self.pos_space, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        space = space.flatten(2).transpose(1, 2)[0]
        time: Tensor = self.pos_time
        if grid_t == 1:  # an image: the first slot, as the sin-cos table gives it
            time = time[:1]
        elif grid_t != time.shape[0]:
            time = F.interpolate(time.T[None], size=grid_t, mode="linear", align_corners=False)[0].T
        return (time[:, None, :] + space[None, :, :]).reshape(-1, self.cfg.width)

    def embed(self, video: Tensor) -> Tensor:
        """Patch tokens [B, T'*H'*W', W] with position embedding added."""
        grid = self.grid(video)
        tokens = self.patch_embed(self.as_clip(video)).flatten(2).transpose(1, 2)
        return tokens + self.position_embedding(*grid).to(tokens.dtype)

    def forward(self, video: Tensor, keep_index: Tensor | None = None, return_layers: int = 0) -> ViTOutput:
        """Encode a clip [B, 3, T, H, W] (T = 1: an image); with `keep_index` [B, K] only those token
        positions enter the blocks."""
        x = self.embed(video)
        if keep_index is not None:
            x = torch.gather(x, 1, keep_index[..., None].expand(-1, -1, x.shape[-1]))
        layers = []
        first_returned = len(self.blocks) - return_layers
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i >= first_returned:
                layers.append(x)
        return ViTOutput(self.norm(x), layers)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights and zero biases, the usual ViT initialisation."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
