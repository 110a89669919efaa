"""Phrase normalisation, GroundingDINO prompt form, token-limited batching and caption noun phrases."""

import pytest

from instvl.annotate.phrases import (
    PhraseConfig,
    approximate_token_count,
    batch_phrases,
    extract_noun_phrases,
    normalise_phrase,
    parse_prompt,
    to_prompt,
    unique_phrases,
)


def test_prompt_form_is_lower_case_and_dot_terminated():
    assert normalise_phrase("  Red   Ball. ") == "red ball"
    assert to_prompt(["Red Ball", "dog.", "red ball", " ", "A  Cat"]) == "red ball . dog . a cat ."
    assert parse_prompt("red ball . dog .") == ["red ball", "dog"]


def test_unique_phrases_rejects_non_strings():
    with pytest.raises(TypeError, match="strings"):
        unique_phrases(["dog", 3])


@pytest.fixture
def make_vocabulary():
    def make(n: int) -> list[str]:
        return [f"object number {i}" for i in range(n)]
    return make


def test_batches_fit_the_token_limit_and_keep_every_phrase(make_vocabulary):
    vocab = make_vocabulary(100)
    groups = batch_phrases(vocab, max_tokens=40)
    assert len(groups) > 1
    assert [p for g in groups for p in g] == vocab
    assert all(approximate_token_count(to_prompt(g)) <= 40 for g in groups)
    # greedy packing: adding the next group's first phrase would overflow
    for group, following in zip(groups, groups[1:], strict=False):
        assert approximate_token_count(to_prompt([*group, following[0]])) > 40


def test_batching_uses_the_given_token_counter(make_vocabulary):
    vocab = make_vocabulary(10)
    assert len(batch_phrases(vocab, max_tokens=1000)) == 1
    assert len(batch_phrases(vocab, max_tokens=1000, count_tokens=lambda text: 100 * len(text.split(".")))) > 1


def test_a_phrase_longer_than_the_limit_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        batch_phrases(["a very long phrase " * 20], max_tokens=16)


def test_noun_phrases_from_a_caption():
    caption = ("A small red ball rolls past the big blue cube, while two green triangles move left. "
               "The dog sits on a wooden chair.")
    assert extract_noun_phrases(caption) == ["small red ball", "big blue cube", "green triangles", "dog",
                                             "wooden chair"]
    assert extract_noun_phrases("nothing to see") == []


def test_phrase_config_merges_vocabulary_and_caption():
    both = PhraseConfig(vocabulary=["Person", "dog"])
    assert both.phrases_for("A dog chases a red frisbee.") == ["person", "dog", "red frisbee"]
    assert PhraseConfig(source="vocabulary", vocabulary=["car"]).phrases_for("A dog runs.") == ["car"]
    assert PhraseConfig(source="caption", max_phrases=1).phrases_for("A cat and a dog.") == ["cat"]
