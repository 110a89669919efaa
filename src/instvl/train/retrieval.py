"""Retrieval metrics: T2V/V2T recall@K and mean recall from a (text x video) similarity, in chunks.

The similarity has one row per text query and one column per visual item (a video, or an instance
crop). Ground truth gives, per text, the column indices that count as correct; V2T uses the inverse
mapping. Ranks are computed query block by query block, so a gallery of any size needs only
`chunk_size x num_gallery` scores in memory at a time when the similarity comes from embeddings.

Ties are broken against the query: a wrong item scoring exactly as high as the best correct item
counts as ranked above it. A model that outputs constant embeddings therefore scores R@1 = 0 (not a
lucky 100), and results do not depend on gallery order.

Re-ranking: `rerank="none"` ranks by plain embedding similarity (the paper's ITC score).
`rerank="dual_softmax"` ranks each query's row by `sim/t - logsumexp_over_queries(sim/t)`, the
dual-softmax prior that uses the other queries of the split; the mode is recorded in every report.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch

RerankMode = Literal["none", "dual_softmax"]
Positives = Sequence[Sequence[int]] | Sequence[int] | torch.Tensor
"""Ground truth: each query's correct gallery index, or a list of them."""
RECALL_KS = (1, 5, 10)


class Similarity:
    """A (queries x gallery) score matrix, held whole or computed block-wise from embeddings."""

    def __init__(self, matrix: torch.Tensor | None = None, queries: torch.Tensor | None = None,
                 gallery: torch.Tensor | None = None):
        if (matrix is None) == (queries is None or gallery is None):
            raise ValueError("give either a similarity matrix or both query and gallery embeddings")
        self.matrix, self.queries, self.gallery = matrix, queries, gallery
        if matrix is not None and matrix.dim() != 2:
            raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(matrix.shape)}")

    @classmethod
    def from_embeddings(cls, queries: torch.Tensor, gallery: torch.Tensor) -> "Similarity":
        if queries.shape[-1] != gallery.shape[-1]:
            raise ValueError(f"embedding sizes differ: {queries.shape[-1]} vs {gallery.shape[-1]}")
        return cls(queries=queries.float(), gallery=gallery.float())

    @property
    def shape(self) -> tuple[int, int]:
        if self.matrix is not None:
            return self.matrix.shape[0], self.matrix.shape[1]
        queries, gallery = self._embeddings()
        return queries.shape[0], gallery.shape[0]

    @property
    def T(self) -> "Similarity":  # noqa: N802 - mirrors tensor.T
        if self.matrix is not None:
            return Similarity(matrix=self.matrix.T)
        return Similarity(queries=self.gallery, gallery=self.queries)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Scores of queries [start, stop) against the whole gallery, float32."""
        if self.matrix is not None:
            return self.matrix[start:stop].float()
        queries, gallery = self._embeddings()
        return queries[start:stop] @ gallery.T

    def _embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.queries is None or self.gallery is None:  # __init__ makes this impossible
            raise ValueError("a matrix-held Similarity has no embeddings")
        return self.queries, self.gallery


def as_positive_lists(positives: Positives) -> list[list[int]]:
    """Normalise ground truth to one list of correct gallery indices per query."""
    if isinstance(positives, torch.Tensor):
        positives = positives.tolist()
    return [[int(i) for i in p] if hasattr(p, "__iter__") else [int(p)] for p in positives]


def invert_positives(positives: list[list[int]], num_gallery: int) -> list[list[int]]:
    """The ground truth seen from the gallery side (V2T from T2V)."""
    inverse: list[list[int]] = [[] for _ in range(num_gallery)]
    for query, items in enumerate(positives):
        for item in items:
            inverse[item].append(query)
    return inverse


def _positive_mask(positives: list[list[int]], start: int, stop: int, num_gallery: int) -> torch.Tensor:
    mask = torch.zeros(stop - start, num_gallery, dtype=torch.bool)
    for row, items in enumerate(positives[start:stop]):
        mask[row, items] = True
    return mask


def _column_logsumexp(sim: Similarity, temperature: float, chunk_size: int) -> torch.Tensor:
    """logsumexp over queries of sim/t for every gallery column, streamed over query blocks."""
    total = torch.full((sim.shape[1],), float("-inf"))
    for start in range(0, sim.shape[0], chunk_size):
        block = sim.rows(start, start + chunk_size) / temperature
        total = torch.logaddexp(total, torch.logsumexp(block, dim=0))
    return total


def rank_of_first_positive(sim: Similarity, positives: list[list[int]], rerank: RerankMode = "none",
                           temperature: float = 0.01, chunk_size: int = 1024) -> torch.Tensor:
    """0-based rank of the best-scored correct item per query (ties count against the query).

    Queries without any positive get rank -1 and are left out of recall by `recall_at_k`.
    """
    num_queries, num_gallery = sim.shape
    if len(positives) != num_queries:
        raise ValueError(f"ground truth has {len(positives)} queries, similarity has {num_queries}")
    bad = [i for items in positives for i in items if not 0 <= i < num_gallery]
    if bad:
        raise ValueError(f"ground-truth index {bad[0]} outside gallery of size {num_gallery}")
    prior = _column_logsumexp(sim, temperature, chunk_size) if rerank == "dual_softmax" else None
    ranks = torch.empty(num_queries, dtype=torch.long)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        block = sim.rows(start, stop)
        if prior is not None:
            block = block / temperature - prior
        mask = _positive_mask(positives, start, stop, num_gallery)
        best = block.masked_fill(~mask, float("-inf")).max(dim=1).values
        ranks[start:stop] = ((block >= best[:, None]) & ~mask).sum(dim=1)
        ranks[start:stop][~mask.any(dim=1)] = -1
    return ranks


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """Percentage of queries whose first correct item is in the top k, for each k."""
    valid = ranks[ranks >= 0]
    if valid.numel() == 0:
        return {k: 0.0 for k in ks}
    return {k: float((valid < k).float().mean() * 100.0) for k in ks}


@dataclass(frozen=True)
class RetrievalReport:
    """T2V and V2T recall@1/5/10 (percent) and their mean, with how they were scored."""

    t2v_r1: float
    t2v_r5: float
    t2v_r10: float
    v2t_r1: float
    v2t_r5: float
    v2t_r10: float
    mean_recall: float
    rerank: str
    num_texts: int
    num_videos: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def retrieval_metrics(sim: Similarity | torch.Tensor, text_to_video: Positives,
                      rerank: RerankMode = "none", temperature: float = 0.01,
                      chunk_size: int = 1024) -> RetrievalReport:
    """T2V and V2T recall from a (text x video) similarity and each text's correct video(s)."""
    if isinstance(sim, torch.Tensor):
        sim = Similarity(matrix=sim)
    positives = as_positive_lists(text_to_video)
    num_texts, num_videos = sim.shape
    t2v = recall_at_k(rank_of_first_positive(sim, positives, rerank, temperature, chunk_size))
    v2t_positives = invert_positives(positives, num_videos)
    v2t = recall_at_k(rank_of_first_positive(sim.T, v2t_positives, rerank, temperature, chunk_size))
    mean = (sum(t2v.values()) + sum(v2t.values())) / (len(t2v) + len(v2t))
    return RetrievalReport(t2v[1], t2v[5], t2v[10], v2t[1], v2t[5], v2t[10], mean, rerank,
                           num_texts, num_videos)


def embedding_retrieval(text: torch.Tensor, video: torch.Tensor, text_to_video: Positives | None = None,
                        rerank: RerankMode = "none", temperature: float = 0.01,
                        chunk_size: int = 1024) -> RetrievalReport:
    """Retrieval between L2-normalised embeddings; by default text i matches video i (1:1)."""
    if text_to_video is None:
        if text.shape[0] != video.shape[0]:
            raise ValueError(f"1:1 ground truth needs as many texts ({text.shape[0]}) as videos "
                             f"({video.shape[0]})")
        text_to_video = torch.arange(text.shape[0])
    return retrieval_metrics(Similarity.from_embeddings(text, video), text_to_video, rerank, temperature,
                             chunk_size)
