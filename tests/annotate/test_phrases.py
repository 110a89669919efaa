"""Phrase normalisation, GroundingDINO prompt form, token-limited batching and caption noun phrases."""

import pytest

from instvl.annotate.phrases import (
    PhraseConfig,
    approximate_token_count,
    batch_phrases,
    extract_noun_phrases,
    is_stuff,
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
    counter = lambda text: 100 * len(text.split("."))  # noqa: E731
    assert len(batch_phrases(vocab, max_tokens=1000, count_tokens=counter)) > 1


def test_a_phrase_longer_than_the_limit_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        batch_phrases(["a very long phrase " * 20], max_tokens=16)


def test_noun_phrases_from_a_caption():
    caption = ("A small red ball rolls past the big blue cube, while two green triangles move left. "
               "The dog sits on a wooden chair.")
    assert extract_noun_phrases(caption) == ["small red ball", "big blue cube", "green triangles", "dog",
                                             "wooden chair"]
    assert extract_noun_phrases("nothing to see") == []


# Captions as a VLM writes them, with the objects a detector should get (stuff such as sky, road, street,
# grass and the camera never is one). Every expected phrase must be found; no verb phrase may appear.
CAPTIONS = [
    ("A woman picks up a red cup from the kitchen table while the camera pans left.",
     {"woman", "red cup", "kitchen table"}),
    ("Pedestrians cross the street as cars wait at the traffic light.",
     {"pedestrians", "cars", "traffic light"}),
    ("Two children play soccer on a grassy field under a cloudy sky.", {"children", "soccer"}),
    ("A man wearing a blue jacket rides a motorcycle that leans into the curve.",
     {"man", "blue jacket", "motorcycle"}),
    ("People walk past a row of parked bicycles.", {"people", "parked bicycles"}),
    ("A brown dog chases a yellow ball across the lawn.", {"brown dog", "yellow ball"}),
    ("The camera pans across a crowded market with fruit stalls.", {"crowded market", "fruit stalls"}),
    ("A chef slices onions on a wooden cutting board.", {"chef", "onions", "wooden cutting board"}),
    ("Cars and trucks drive along a highway at sunset.", {"cars", "trucks", "highway"}),
    ("A little girl in a pink dress hugs a small puppy.", {"little girl", "pink dress", "small puppy"}),
    ("Two men shake hands in front of an office building.", {"men", "hands", "office building"}),
    ("A cyclist overtakes a bus on a rainy road.", {"cyclist", "bus"}),
    ("Seagulls fly over the ocean near a fishing boat.", {"seagulls", "fishing boat"}),
    ("A cat sleeps on a windowsill next to a potted plant.", {"cat", "windowsill", "potted plant"}),
    ("Firefighters spray water on a burning car.", {"firefighters", "burning car"}),
    ("A horse gallops across a dusty field while a rider holds the reins.", {"horse", "rider", "reins"}),
    ("Students sit at desks and write in notebooks.", {"students", "desks", "notebooks"}),
    ("An elderly man feeds pigeons in a park.", {"elderly man", "pigeons", "park"}),
    ("A skateboarder jumps over a concrete bench.", {"skateboarder", "concrete bench"}),
    ("A waiter carries a tray of glasses through the restaurant.",
     {"waiter", "tray", "glasses", "restaurant"}),
    ("Trees sway in the wind beside a quiet lake.", {"trees", "wind"}),
    ("A red car turns left at the intersection.", {"red car", "intersection"}),
    ("A boy throws a frisbee to his dog on the beach.", {"boy", "frisbee", "dog", "beach"}),
    ("Several ducks swim in a pond surrounded by reeds.", {"ducks", "pond", "reeds"}),
]
VERB_PHRASES = {"woman picks", "camera pans", "children play", "children play soccer", "motorcycle leans",
                "man wearing", "person wearing", "jacket rides", "dog chases", "chef slices", "girl hugs"}


@pytest.mark.parametrize(("caption", "expected"), CAPTIONS, ids=[c[:30] for c, _ in CAPTIONS])
def test_noun_phrases_of_real_captions(caption, expected):
    found = extract_noun_phrases(caption)
    assert expected <= set(found), f"missing {expected - set(found)} in {found}"
    assert not set(found) & VERB_PHRASES, found
    assert not [p for p in found if is_stuff(p)], found
    for phrase in found:  # no determiners, lower case, normalised: ready for the prompt
        assert phrase == normalise_phrase(phrase) and phrase.split()[0] not in ("a", "an", "the", "two")


def test_stuff_is_never_a_phrase():
    assert extract_noun_phrases("The sky above the road and the wall behind the grass.") == []
    assert extract_noun_phrases("The camera pans over the street.") == []


def test_entity_lists_are_normalised_and_stuff_filtered():
    cfg = PhraseConfig()
    assert cfg.from_entities(["The red car", "two dogs", "sky", "the Road.", "  A  Man  ", "man", ""]) == [
        "red car", "dogs", "man"]
    assert cfg.from_entities([]) == []


def test_phrase_config_merges_vocabulary_and_caption():
    both = PhraseConfig(vocabulary=["Person", "dog"])
    assert both.phrases_for("A dog chases a red frisbee.") == ["person", "dog", "red frisbee"]
    assert PhraseConfig(source="vocabulary", vocabulary=["car"]).phrases_for("A dog runs.") == ["car"]
    assert PhraseConfig(source="caption", max_phrases=1).phrases_for("A cat and a dog.") == ["cat"]
