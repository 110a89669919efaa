"""Retrieval metrics against hand-made similarity matrices."""

import pytest
import torch

from instvl.train.retrieval import (
    Similarity,
    embedding_retrieval,
    invert_positives,
    rank_of_first_positive,
    recall_at_k,
    retrieval_metrics,
)

# Rows are texts, columns videos; text i matches video i. Text 1 prefers video 0 (rank 1).
HAND = torch.tensor([[0.9, 0.1, 0.2],
                     [0.8, 0.3, 0.1],
                     [0.1, 0.2, 0.7]])


def test_perfect_diagonal_scores_100():
    report = retrieval_metrics(torch.eye(20), torch.arange(20))
    assert report.t2v_r1 == report.v2t_r1 == report.mean_recall == 100.0
    assert report.rerank == "none" and report.num_texts == report.num_videos == 20


def test_hand_matrix_both_directions():
    report = retrieval_metrics(HAND, [0, 1, 2])
    assert report.t2v_r1 == pytest.approx(200 / 3)
    assert report.t2v_r5 == report.t2v_r10 == 100.0
    assert report.v2t_r1 == report.v2t_r5 == report.v2t_r10 == 100.0
    assert report.mean_recall == pytest.approx((200 / 3 + 500) / 6)


def test_known_permutation_ranks():
    """Text i's correct video gets the (r_i + 1)-th highest score of its row."""
    wanted = [0, 0, 1, 4, 5, 9, 10, 11, 0, 2, 3, 6]
    sim = torch.zeros(12, 12)
    for i, rank in enumerate(wanted):
        others = [j for j in range(12) if j != i]
        order = others[:rank] + [i] + others[rank:]
        sim[i, order] = torch.linspace(1.0, 0.0, 12)
    ranks = rank_of_first_positive(Similarity(matrix=sim), [[i] for i in range(12)])
    assert ranks.tolist() == wanted
    recall = recall_at_k(ranks)
    assert recall[1] == pytest.approx(25.0)
    assert recall[5] == pytest.approx(700 / 12)
    assert recall[10] == pytest.approx(1000 / 12)


def test_permutation_of_one_hot_scores():
    perm = torch.tensor([0, 2, 1, 3, 5, 4])  # fixed points 0 and 3
    sim = torch.eye(6)[perm]
    report = retrieval_metrics(sim, torch.arange(6))
    assert report.t2v_r1 == report.v2t_r1 == pytest.approx(100 / 3)


def test_ties_count_against_the_query():
    constant = retrieval_metrics(torch.ones(12, 12), torch.arange(12))
    assert constant.mean_recall == 0.0
    tied = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert rank_of_first_positive(Similarity(matrix=tied), [[0], [1]]).tolist() == [1, 0]
    # Gallery order does not matter.
    assert rank_of_first_positive(Similarity(matrix=tied.flip(1)), [[1], [0]]).tolist() == [1, 0]


def test_several_captions_per_video():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.3]])
    report = retrieval_metrics(sim, [0, 0, 1, 1])
    assert report.t2v_r1 == pytest.approx(50.0)  # text 1 and 2 pick the wrong video
    # Video 0's best text is 0 (its own); video 1's best is text 1, a caption of video 0.
    assert report.v2t_r1 == pytest.approx(50.0)
    assert report.v2t_r5 == 100.0
    assert invert_positives([[0], [0], [1], [1]], 2) == [[0, 1], [2, 3]]


def test_dual_softmax_is_reported_and_reranks():
    plain = retrieval_metrics(HAND, [0, 1, 2])
    reranked = retrieval_metrics(HAND, [0, 1, 2], rerank="dual_softmax", temperature=0.1)
    assert reranked.rerank == "dual_softmax" and reranked.to_dict()["rerank"] == "dual_softmax"
    assert plain.t2v_r1 < reranked.t2v_r1 == 100.0


def test_chunked_embeddings_match_full_matrix():
    gen = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    video = torch.nn.functional.normalize(text + 0.8 * torch.randn(50, 8, generator=gen), dim=-1)
    full = retrieval_metrics(text @ video.T, torch.arange(50), rerank="dual_softmax")
    chunked = embedding_retrieval(text, video, rerank="dual_softmax", chunk_size=7)
    assert chunked.to_dict() == pytest.approx(full.to_dict())
    assert 0 < chunked.t2v_r1 < 100


def test_bad_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="outside gallery"):
        retrieval_metrics(HAND, [0, 1, 5])
    with pytest.raises(ValueError, match="ground truth has 2 queries"):
        retrieval_metrics(HAND, [0, 1])
