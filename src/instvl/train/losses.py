"""InstAP's losses: teacher alignment (L_rec, Eq. 1), global video-text InfoNCE (L_glob) and the
instance InfoNCE with same-sample negatives masked out (L_inst, Eq. 8), plus learnable temperatures.

When torch.distributed is initialised, the contrastive losses gather the embeddings of every rank with
a gradient-preserving all-gather (`distributed.gather_rows`); each rank scores its own rows against all
gathered columns (the "local loss" of open_clip). Ranks may hold different numbers of rows (instances
per sample vary; failed decodes shrink a batch), so each rank's mean, in all three losses, is weighted
by its share of the rows (samples for L_rec), world * n_rank / n_all: averaging the gradients over ranks
(DDP, FSDP) then gives exactly the full-batch gradient, and the mean of the logged per-rank values is
the full-batch loss.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instvl.train.distributed import gather_rows, process_count, process_rank, total_count


class LearnableTemperature(nn.Module):
    """A temperature learned in log space and clamped to [min_value, max_value] (UMT: 0.07 in [1e-3, 0.5])."""

    def __init__(self, init: float = 0.07, min_value: float = 1e-3, max_value: float = 0.5) -> None:
        super().__init__()
        if not 0 < min_value <= init <= max_value:
            raise ValueError(f"temperature init {init} must lie in [{min_value}, {max_value}]")
        # Shape (1,), not a scalar: FSDP's fully_shard refuses 0-d parameters.
        self.log_value = nn.Parameter(torch.tensor([math.log(init)]))
        self.bounds = (math.log(min_value), math.log(max_value))

    def forward(self) -> Tensor:
        # Clamp the parameter itself (as CLIP/UMT do), so it cannot drift where its gradient is zero.
        with torch.no_grad():
            self.log_value.clamp_(*self.bounds)
        return self.log_value.exp().squeeze(0)


def alignment_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Eq. 1 averaged over layers: mean over tokens of ||s/|s| - t/|t|||^2 (= 2 - 2 cos), [B, L, D] each.

    Across ranks, weighted by this rank's share of the samples (module docstring), so a rank whose batch
    lost samples to decode errors does not weigh its remaining ones up.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"alignment needs matching non-empty layer lists, got {len(student)} "
                         f"and {len(teacher)}")
    per_layer = []
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"student features {tuple(s.shape)} do not match teacher {tuple(t.shape)}")
        cosine = (F.normalize(s.float(), dim=-1) * F.normalize(t.float(), dim=-1)).sum(-1)
        per_layer.append((2 - 2 * cosine).mean())
    samples = student[0].shape[0]
    return torch.stack(per_layer).mean() * _rank_share(samples, total_count(samples, student[0].device))


def _rank_share(local: int, total: int) -> float:
    """world * local / total: the weight that turns this rank's mean into its part of the full-batch mean."""
    return process_count() * local / total if total else 0.0


def _info_nce(logits: Tensor, offset: int) -> Tensor:
    """Cross-entropy of rows whose positive sits in column offset + row."""
    targets = torch.arange(logits.shape[0], device=logits.device) + offset
    return F.cross_entropy(logits, targets)


def global_contrastive(video: Tensor, text: Tensor, temperature: Tensor) -> Tensor:
    """Symmetric InfoNCE between L2-normalised [B, D] video and text embeddings, mean of both directions."""
    if video.shape != text.shape:
        raise ValueError(f"video {tuple(video.shape)} and text {tuple(text.shape)} embeddings differ "
                         "in shape")
    # One gather for both modalities keeps the backward collectives in the same order on every rank.
    both, offset = gather_rows(torch.cat([video, text], dim=1))
    all_video, all_text = both.split(video.shape[1], dim=1)
    v2t = _info_nce(video.float() @ all_text.float().T / temperature, offset)
    t2v = _info_nce(text.float() @ all_video.float().T / temperature, offset)
    return (v2t + t2v) / 2 * _rank_share(video.shape[0], both.shape[0])


def instance_contrastive(instances: Tensor, texts: Tensor, sample_index: Tensor,
                         temperature: Tensor) -> Tensor:
    """Eq. 8: bidirectional InfoNCE over all instances, same-sample non-positives dropped from negatives.

    `instances` and `texts` are L2-normalised [N, D]; `sample_index` [N] names each instance's sample
    (batch row). Ranks may hold different N (also 0); a rank without instances contributes 0, and each
    rank's mean is weighted by its share of all instances (module docstring).
    """
    if instances.shape != texts.shape or sample_index.shape != instances.shape[:1]:
        raise ValueError(f"instance embeddings {tuple(instances.shape)}, texts {tuple(texts.shape)} and "
                         f"sample_index {tuple(sample_index.shape)} do not match")
    # Batch rows of different ranks are different samples: make the keys unique per rank.
    group = sample_index.long() + (process_rank() << 32)
    both, offset = gather_rows(torch.cat([instances, texts], dim=1))
    all_instances, all_texts = both.split(instances.shape[1], dim=1)
    all_groups, _ = gather_rows(group)
    if instances.shape[0] == 0:
        # Still part of the graph, so this rank joins the gather's backward like the others.
        return (both.sum() + temperature) * 0.0
    rows = torch.arange(instances.shape[0], device=instances.device) + offset
    same_sample = group[:, None] == all_groups[None, :]
    not_self = rows[:, None] != torch.arange(all_groups.shape[0], device=group.device)[None, :]
    excluded = same_sample & not_self
    i2t = (instances.float() @ all_texts.float().T / temperature).masked_fill(excluded, float("-inf"))
    t2i = (texts.float() @ all_instances.float().T / temperature).masked_fill(excluded, float("-inf"))
    share = _rank_share(instances.shape[0], all_groups.shape[0])
    return (_info_nce(i2t, offset) + _info_nce(t2i, offset)) / 2 * share
