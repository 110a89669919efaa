"""Why instance retrieval fails: each top-1 error sorted into the paper's categories, with examples.

Instance retrieval pairs instance i's crop embedding with instance i's caption (1:1 over all
instances of the split). A query is an error when some wrong item scores at least as high as the
correct one (the tie rule of `retrieval.py`); the wrong item it is confused with is the best-scoring
wrong item. Categories, checked in this order:

- `duplicate_caption`: the confused item's caption has the same text as the query's (after case and
  whitespace folding) - the ground truth itself is ambiguous;
- `multi_object_confusion`: the confused item is another instance of the same sample (the paper's
  main failure mode, 44.6% of its errors);
- `cross_sample`: the confused item comes from another sample.

With per-instance box areas, errors whose query instance is small (mean normalised area under
`small_area`) are also counted as `small_instance` - the paper's "limited visual evidence" mode; this
is an attribute across categories, not a fourth category.

`within_scene_ranks` asks the multi-object question directly, whatever the other samples do: the rank of
a query's own instance among the instances of its own sample only (chance: 1/k for a sample of k). Top-1
errors are counted by the best wrong item of the whole gallery, so while cross-sample errors dominate
they hide whether a model tells a scene's objects apart; this score does not.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from instvl.train.retrieval import Similarity

CATEGORIES = ("multi_object_confusion", "cross_sample", "duplicate_caption")
Direction = Literal["v2t", "t2v"]


@dataclass(frozen=True)
class InstanceRef:
    """Who an instance is: its sample, its id within the sample and its caption."""

    sample_id: str
    instance_id: int
    caption: str


@dataclass
class ErrorBreakdown:
    """Counts and percentages (of all errors) per category, plus a few examples of each."""

    direction: str
    num_queries: int
    num_errors: int
    counts: dict[str, int]
    percentages: dict[str, float]
    small_instance_errors: int | None = None
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return 100.0 * self.num_errors / self.num_queries if self.num_queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


@dataclass
class WithinScene:
    """How often a query's own instance outranks the other instances of its sample, against chance.

    Only queries whose sample has two or more instances count. `top1` is the share (%) whose own instance
    scores above all of its sample's others (a tie is a miss, as in `retrieval.py`); `chance_top1` is the
    mean of 1/k; `mean_rank` is the mean of rank/(k-1) (0: always first, 0.5: chance, 1: always last).
    """

    direction: str
    num_queries: int
    top1: float
    chance_top1: float
    mean_rank: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def classify_error(query: InstanceRef, confused: InstanceRef) -> str:
    """The category of confusing `query` with `confused` (see the module docstring)."""
    if _fold(query.caption) == _fold(confused.caption):
        return "duplicate_caption"
    if query.sample_id == confused.sample_id:
        return "multi_object_confusion"
    return "cross_sample"


def top_wrong_items(sim: Similarity, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query (1:1 ground truth on the diagonal): is it an error, and its best-scoring wrong item."""
    num_queries, num_gallery = sim.shape
    if num_queries != num_gallery:
        raise ValueError(f"instance retrieval needs a square similarity, got {num_queries}x{num_gallery}")
    is_error = torch.zeros(num_queries, dtype=torch.bool)
    confused = torch.full((num_queries,), -1, dtype=torch.long)
    for start in range(0, num_queries, chunk_size):
        block = sim.rows(start, start + chunk_size).clone()
        rows = torch.arange(block.shape[0])
        correct = block[rows, rows + start].clone()
        block[rows, rows + start] = float("-inf")
        best_wrong, best_index = block.max(dim=1)
        is_error[start:start + len(rows)] = best_wrong >= correct
        confused[start:start + len(rows)] = best_index
    return is_error, confused


def _instances(sample_ids: Sequence[str], instance_ids: Sequence[int] | None,
               captions: Sequence[str]) -> list[InstanceRef]:
    if len(sample_ids) != len(captions) or (instance_ids is not None and len(instance_ids) != len(captions)):
        raise ValueError(f"per-instance lists differ in length: {len(sample_ids)} sample ids, "
                         f"{len(captions)} captions, {len(instance_ids or captions)} instance ids")
    ids = instance_ids if instance_ids is not None else [-1] * len(captions)
    return [InstanceRef(s, int(i), c) for s, i, c in zip(sample_ids, ids, captions, strict=True)]


def instance_error_breakdown(sim: Similarity | torch.Tensor, sample_ids: Sequence[str],
                             captions: Sequence[str], instance_ids: Sequence[int] | None = None,
                             direction: Direction = "v2t",
                             box_areas: Sequence[float] | None = None, small_area: float = 0.01,
                             max_examples: int = 5, chunk_size: int = 1024) -> ErrorBreakdown:
    """Break down top-1 errors of instance retrieval.

    Args:
        sim: (instance caption x instance crop) similarity, 1:1 on the diagonal (text rows, as in
            `retrieval.py`).
        direction: "v2t" - crops query captions (the paper's "which caption did it pick");
            "t2v" - captions query crops.
        box_areas: optional mean normalised box area of each instance, for `small_instance_errors`.
    """
    if isinstance(sim, torch.Tensor):
        sim = Similarity(matrix=sim)
    refs = _instances(sample_ids, instance_ids, captions)
    if sim.shape[0] != len(refs):
        raise ValueError(f"similarity has {sim.shape[0]} rows but {len(refs)} instances were described")
    is_error, confused = top_wrong_items(sim.T if direction == "v2t" else sim, chunk_size)
    counts = dict.fromkeys(CATEGORIES, 0)
    examples: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
    error_queries = torch.nonzero(is_error).flatten().tolist()
    for query in error_queries:
        other = int(confused[query])
        category = classify_error(refs[query], refs[other])
        counts[category] += 1
        if len(examples[category]) < max_examples:
            examples[category].append({"query": asdict(refs[query]), "retrieved": asdict(refs[other])})
    num_errors = len(error_queries)
    percentages = {c: 100.0 * n / num_errors if num_errors else 0.0 for c, n in counts.items()}
    small = None
    if box_areas is not None:
        small = sum(1 for q in error_queries if box_areas[q] < small_area)
    return ErrorBreakdown(direction, len(refs), num_errors, counts, percentages, small, examples)


def within_scene_ranks(sim: Similarity | torch.Tensor, sample_ids: Sequence[str],
                       direction: Direction = "v2t", chunk_size: int = 1024) -> WithinScene:
    """Rank of each query's own instance among its sample's instances (see `WithinScene`).

    `sim` is (instance caption x instance crop), 1:1 on the diagonal, as in `instance_error_breakdown`;
    "v2t" ranks a crop's sample's captions, "t2v" a caption's sample's crops.
    """
    if isinstance(sim, torch.Tensor):
        sim = Similarity(matrix=sim)
    if sim.shape[0] != sim.shape[1] or sim.shape[0] != len(sample_ids):
        raise ValueError(f"within-scene ranks need a square similarity over {len(sample_ids)} instances, "
                         f"got {sim.shape[0]}x{sim.shape[1]}")
    scored = sim.T if direction == "v2t" else sim
    members: dict[str, list[int]] = {}
    for index, sample in enumerate(sample_ids):
        members.setdefault(sample, []).append(index)
    columns = {sample: torch.tensor(idx) for sample, idx in members.items()}
    ranks, sizes = [], []
    for start in range(0, len(sample_ids), chunk_size):
        block = scored.rows(start, start + chunk_size)
        for row in range(block.shape[0]):
            query = start + row
            own = columns[sample_ids[query]]
            if len(own) < 2:
                continue
            # Others scoring at least as high as the own instance rank above it (ties are misses).
            ranks.append(int((block[row, own] >= block[row, query]).sum()) - 1)
            sizes.append(len(own))
    if not ranks:
        return WithinScene(direction, 0, 0.0, 0.0, 0.0)
    rank, size = torch.tensor(ranks, dtype=torch.float64), torch.tensor(sizes, dtype=torch.float64)
    return WithinScene(direction, len(ranks), float((rank == 0).double().mean() * 100),
                       float((1 / size).mean() * 100), float((rank / (size - 1)).mean()))
