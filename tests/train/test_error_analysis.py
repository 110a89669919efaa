"""Instance-retrieval error categories on a constructed example."""

import pytest
import torch

from instvl.train.error_analysis import (
    InstanceRef,
    classify_error,
    instance_error_breakdown,
    within_scene_ranks,
)

SAMPLES = ["s0", "s0", "s1", "s1", "s2"]
IDS = [0, 1, 0, 1, 0]
CAPTIONS = ["a red ball", "a blue cube", "a green cone", "A red  ball", "a yellow star"]


def crop_to_text(top_choice: list[int]) -> torch.Tensor:
    """(crop x text) scores where crop q scores `top_choice[q]` highest and its own caption second."""
    scores = torch.zeros(5, 5)
    for crop, choice in enumerate(top_choice):
        scores[crop, crop] = 0.5
        scores[crop, choice] = 1.0
    return scores


@pytest.fixture
def breakdown():
    # crop 0 -> caption 3 (same text), crop 1 -> caption 0 (same sample), crop 2 correct,
    # crop 3 -> caption 4 and crop 4 -> caption 1 (other samples).
    sim_text_by_crop = crop_to_text([3, 0, 2, 4, 1]).T
    return instance_error_breakdown(sim_text_by_crop, SAMPLES, CAPTIONS, IDS, direction="v2t",
                                    box_areas=[0.001, 0.5, 0.5, 0.005, 0.5], small_area=0.01)


def test_counts_and_percentages(breakdown):
    assert breakdown.num_queries == 5 and breakdown.num_errors == 4
    assert breakdown.counts == {"multi_object_confusion": 1, "cross_sample": 2, "duplicate_caption": 1}
    assert breakdown.percentages == {"multi_object_confusion": 25.0, "cross_sample": 50.0,
                                     "duplicate_caption": 25.0}
    assert breakdown.error_rate == 80.0
    assert breakdown.small_instance_errors == 2


def test_examples_name_both_instances(breakdown):
    example = breakdown.examples["multi_object_confusion"][0]
    assert example["query"] == {"sample_id": "s0", "instance_id": 1, "caption": "a blue cube"}
    assert example["retrieved"]["caption"] == "a red ball"
    assert len(breakdown.examples["cross_sample"]) == 2
    assert breakdown.to_dict()["error_rate"] == 80.0


def test_text_to_crop_direction_reads_rows():
    # Captions query crops: caption q's row prefers crop top_choice[q].
    result = instance_error_breakdown(crop_to_text([1, 1, 0, 3, 4]), SAMPLES, CAPTIONS, IDS, direction="t2v")
    assert result.num_errors == 2
    assert result.counts["multi_object_confusion"] == 1 and result.counts["cross_sample"] == 1


def test_tie_with_a_wrong_item_is_an_error():
    sim = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    result = instance_error_breakdown(sim, ["a", "b"], ["x", "y"], direction="t2v")
    assert result.num_errors == 1 and result.counts["cross_sample"] == 1


def test_perfect_retrieval_has_no_errors():
    result = instance_error_breakdown(torch.eye(5), SAMPLES, CAPTIONS, IDS)
    assert result.num_errors == 0 and set(result.percentages.values()) == {0.0}


def test_classify_prefers_duplicate_text_over_same_sample():
    query = InstanceRef("s0", 0, "A dog")
    assert classify_error(query, InstanceRef("s0", 1, "a dog ")) == "duplicate_caption"
    assert classify_error(query, InstanceRef("s0", 1, "a cat")) == "multi_object_confusion"


def test_mismatched_lengths_are_reported():
    with pytest.raises(ValueError, match="differ in length"):
        instance_error_breakdown(torch.eye(5), SAMPLES[:4], CAPTIONS, IDS)
    with pytest.raises(ValueError, match="square"):
        instance_error_breakdown(torch.ones(5, 4), SAMPLES, CAPTIONS, IDS)


def test_within_scene_ignores_other_samples_and_skips_lone_instances():
    # Every crop's best caption is another sample's (all top-1 errors are cross-sample), yet each crop
    # still prefers its own caption over its sibling's: within-scene top-1 is perfect.
    scores = crop_to_text([2, 3, 0, 1, 0])
    scores[0, 1] = scores[1, 0] = scores[2, 3] = scores[3, 2] = 0.1
    result = within_scene_ranks(scores.T, SAMPLES, direction="v2t")
    assert instance_error_breakdown(scores.T, SAMPLES, CAPTIONS, IDS).counts["cross_sample"] == 5
    assert result.num_queries == 4  # s2 has one instance: no choice to make
    assert (result.top1, result.chance_top1, result.mean_rank) == (100.0, 50.0, 0.0)


def test_within_scene_counts_siblings_above_and_ties_as_misses():
    scores = torch.eye(5)
    scores[0, 1] = 2.0  # crop 0 prefers its sibling's caption
    scores[2, 3] = 1.0  # crop 2 ties its own caption with its sibling's
    result = within_scene_ranks(scores.T, SAMPLES, direction="v2t")
    assert (result.top1, result.mean_rank) == (50.0, 0.5)
    # Captions query crops: caption 1's row holds the 2.0 (above its own crop), caption 3's the tie.
    assert within_scene_ranks(scores, SAMPLES, direction="t2v").top1 == 50.0
    assert within_scene_ranks(torch.eye(5), SAMPLES, direction="t2v").top1 == 100.0


def test_within_scene_chance_follows_scene_sizes():
    result = within_scene_ranks(torch.eye(5), ["a", "a", "a", "b", "b"])
    assert result.chance_top1 == pytest.approx(100 * (3 / 3 + 2 / 2) / 5)
    with pytest.raises(ValueError, match="square"):
        within_scene_ranks(torch.ones(5, 4), SAMPLES)
