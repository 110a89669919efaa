"""Global-local cross-attention: instance crop tokens query the scene tokens of their own sample.

Eqs. 5-6 of the paper: Z = XAttn(C, V_i), z = mean_l Z_l. Each crop n attends only to the scene tokens
of batch row `sample_index[n]`; rows may carry a padding mask when scenes differ in length. The block
is pre-norm with a residual and a feed-forward layer (depth and heads are not given by the paper).
"""

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from instvl.config import BaseConfig


class InstanceConfig(BaseConfig):
    depth: int = Field(1, ge=1)
    """Cross-attention blocks between crop tokens and scene tokens."""
    heads: int | None = None
    """Attention heads; defaults to the student's."""
    mlp_ratio: float = 4.0
    crop_mask_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of each crop frame's tokens that the student does not see in training (random masking,
    like the scene's; 0: unmasked crops, as the paper describes). Evaluation always sees every token."""


class CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries from crops, keys/values from the scene) plus a feed-forward."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, queries: Tensor, scene: Tensor, scene_mask: Tensor | None) -> Tensor:
        count, length, width = queries.shape
        head_dim = width // self.heads
        q = self.q(self.norm_q(queries)).reshape(count, length, self.heads, head_dim).transpose(1, 2)
        kv = self.kv(self.norm_kv(scene)).reshape(count, scene.shape[1], 2, self.heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)
        attn_mask = None if scene_mask is None else scene_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = queries + self.proj(out.transpose(1, 2).reshape(count, length, width))
        return x + self.mlp(self.norm_mlp(x))


class GlobalLocalAttention(nn.Module):
    """[N, Lc, W] crop tokens x [B, L, W] scene tokens -> [N, W] pooled instance features."""

    def __init__(self, width: int, heads: int, cfg: InstanceConfig) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"instance cross-attention: width {width} is not divisible by {heads} heads")
        self.blocks = nn.ModuleList(CrossBlock(width, heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, crop_tokens: Tensor, scene_tokens: Tensor, sample_index: Tensor,
                scene_mask: Tensor | None = None) -> Tensor:
        """`scene_mask` [B, L] is True where a scene token is real (optional)."""
        check_sample_index(sample_index, crop_tokens.shape[0], scene_tokens.shape[0])
        scene = scene_tokens[sample_index]
        mask = None if scene_mask is None else scene_mask[sample_index].bool()
        x = crop_tokens
        for block in self.blocks:
            x = block(x, scene, mask)
        return self.norm(x).mean(dim=1)


def check_sample_index(sample_index: Tensor, num_instances: int, batch: int) -> None:
    """A clear error when instances point at batch rows that do not exist."""
    if sample_index.shape != (num_instances,):
        raise ValueError(f"inst_sample_index has shape {tuple(sample_index.shape)}, "
                         f"expected ({num_instances},)")
    if num_instances and not sample_index.is_meta and (int(sample_index.min()) < 0
                                                       or int(sample_index.max()) >= batch):
        raise ValueError(f"inst_sample_index values must lie in [0, {batch}), got "
                         f"[{int(sample_index.min())}, {int(sample_index.max())}]")
