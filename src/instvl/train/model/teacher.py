"""What every frozen teacher gives the student: per-layer targets and the attention that guides masking.

A teacher is an image ViT with a class token, run on each frame of the clip. Its patch grid is made to
match the student's (frames are resized to `grid * teacher_patch`), and frames that the student merges
into one tubelet are averaged, so that teacher token i lines up with student token i.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TeacherOutput(NamedTuple):
    features: list[Tensor]
    """Last-K-layer patch features [B, T'*N, D], L2-normalised, in the student's token order."""
    attention: Tensor
    """[B, T', N] last-layer class-token attention to each patch (sums to at most 1 per slot)."""


class Teacher(nn.Module):
    """Base of the teachers: subclasses encode frames; this class handles the clip <-> frame plumbing."""

    patch_size: int
    depth: int
    feature_dim: int

    def encode_frames(self, frames: Tensor, num_layers: int) -> tuple[list[Tensor], Tensor]:
        """Per-frame patch features (last `num_layers` layers, each [F, N, D]) and CLS attention [F, N]."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, video: Tensor, num_layers: int, grid: tuple[int, int],
                tubelet_size: int) -> TeacherOutput:
        """Targets for a [B, 3, T, H, W] clip whose student grid per tubelet is `grid` = (H', W')."""
        batch, _, frames, _, _ = video.shape
        if num_layers > self.depth:
            raise ValueError(f"cannot align {num_layers} layers with a teacher of depth {self.depth}")
        size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        flat = video.transpose(1, 2).reshape(batch * frames, 3, *video.shape[-2:])
        if flat.shape[-2:] != size:
            flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
        features, attention = self.encode_frames(flat, num_layers)
        merged = [merge_tubelets(f, batch, tubelet_size).flatten(1, 2) for f in features]
        targets = [F.normalize(f.float(), dim=-1) for f in merged]
        return TeacherOutput(targets, merge_tubelets(attention.float(), batch, tubelet_size))


def merge_tubelets(per_frame: Tensor, batch: int, tubelet_size: int) -> Tensor:
    """[B*T, N, ...] per-frame values -> [B, T/tubelet, N, ...] averaged within each tubelet."""
    frames = per_frame.shape[0] // batch
    grouped = per_frame.reshape(batch, frames // tubelet_size, tubelet_size, *per_frame.shape[1:])
    return grouped.mean(dim=2)


def class_attention(query_cls: Tensor, keys: Tensor, heads: int, scale: float) -> Tensor:
    """Head-averaged softmax attention of the class token over all tokens, patch part only: [F, N].

    `query_cls` is [F, D] (the projected class-token query), `keys` [F, 1+N, D] (class token first).
    """
    frames, length, dim = keys.shape
    q = query_cls.reshape(frames, heads, 1, dim // heads)
    k = keys.reshape(frames, length, heads, dim // heads).transpose(1, 2)
    weights = torch.softmax((q @ k.transpose(-1, -2)).float() * scale, dim=-1)
    return weights[:, :, 0, 1:].mean(dim=1)
