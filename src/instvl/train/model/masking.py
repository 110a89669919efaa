"""UMT token masking: choose which student tokens stay visible, guided by the teacher's attention.

Tokens live on a (T', N) grid: T' temporal slots (tubelets) of N spatial patches. Every slot keeps the
same number of tokens, N - int(N * ratio), so all clips of a batch have equal visible length and a
token stands for a whole tubelet (all of its frames are kept or dropped together). With
`scope: tube` the same spatial positions are kept in every slot (VideoMAE tube masking).

`kind: attention` ranks tokens by the teacher's class-token attention: `sampling: multinomial` draws
the visible set with probability proportional to the attention, as UMT does; `sampling: topk` keeps
the most-attended tokens. `kind: random` draws the visible set uniformly.
"""

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from instvl.config import BaseConfig


class MaskingConfig(BaseConfig):
    ratio: float = Field(0.8, ge=0.0, lt=1.0)
    """Fraction of the tokens of each temporal slot of a video that the student does not see."""
    image_ratio: float = Field(0.5, ge=0.0, lt=1.0)
    """The same for an image (a 1-frame clip); UMT masks images less (0.5) than videos (0.8)."""
    kind: Literal["attention", "random"] = "attention"
    sampling: Literal["multinomial", "topk"] = "multinomial"
    scope: Literal["frame", "tube"] = "frame"
    """Choose per temporal slot (UMT) or one spatial set shared by all slots (tube masking)."""

    def ratio_for(self, image: bool) -> float:
        """The masking ratio of an image or of a video."""
        return self.image_ratio if image else self.ratio

    def visible_per_slot(self, num_patches: int, ratio: float | None = None) -> int:
        """Visible tokens per temporal slot at `ratio` (default: the video ratio)."""
        ratio = self.ratio if ratio is None else ratio
        return max(1, num_patches - int(num_patches * ratio))


def select_visible(cfg: MaskingConfig, batch: int, grid_t: int, num_patches: int,
                   attention: Tensor | None = None, generator: torch.Generator | None = None, *,
                   ratio: float | None = None, device: torch.device | str | None = None) -> Tensor:
    """Indices [B, T'*K] (ascending, into the flattened T'*N grid) of the tokens the student sees.

    `attention` [B, T', N] is needed for `kind: attention`; a missing one is an error. `ratio` overrides
    the config's video ratio (images: `cfg.ratio_for(True)`); `device` places random masks.
    """
    scores = _scores(cfg, batch, grid_t, num_patches, attention, device)
    if cfg.scope == "tube":
        scores = scores.mean(dim=1, keepdim=True)
    keep = cfg.visible_per_slot(num_patches, ratio)
    chosen = _choose(cfg, scores.reshape(-1, num_patches), keep, generator)
    chosen = chosen.reshape(batch, scores.shape[1], keep).expand(batch, grid_t, keep)
    offsets = torch.arange(grid_t, device=chosen.device)[None, :, None] * num_patches
    return (chosen.sort(dim=-1).values + offsets).reshape(batch, grid_t * keep)


def _scores(cfg: MaskingConfig, batch: int, grid_t: int, num_patches: int,
            attention: Tensor | None, device: torch.device | str | None) -> Tensor:
    if cfg.kind == "random":
        device = attention.device if attention is not None else device
        return torch.ones(batch, grid_t, num_patches, device=device)
    if attention is None:
        raise ValueError("masking.kind=attention needs the teacher's attention; none was given")
    if attention.shape != (batch, grid_t, num_patches):
        raise ValueError(f"teacher attention {tuple(attention.shape)} does not match the token grid "
                         f"{(batch, grid_t, num_patches)}")
    return attention.float()


def _choose(cfg: MaskingConfig, scores: Tensor, keep: int, generator: torch.Generator | None) -> Tensor:
    """Per row of `scores` [R, N], `keep` distinct column indices."""
    if cfg.kind == "attention" and cfg.sampling == "topk":
        return scores.topk(keep, dim=-1).indices
    # A floor keeps every token drawable, so rows with fewer non-zero weights than `keep` still work.
    weights = scores.clamp_min(0) + 1e-6 * scores.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
    return torch.multinomial(weights, keep, replacement=False, generator=generator)
