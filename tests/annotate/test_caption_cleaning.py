"""Caption cleaning, length checks and parsing of 'caption + entities' answers."""

import pytest

from instvl.annotate.caption.cleaning import (
    CleaningConfig,
    caption_defects,
    clean_caption,
    parse_entities,
    strip_artefacts,
    truncate_at_sentence,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ('Sure! Here is a caption: "A red ball  rolls left."<|im_end|>', "A red ball rolls left."),
    ("Certainly, here's the description of the scene:\n\nA dog runs.", "A dog runs."),
    ("assistant: Caption: **A man** walks\n\n a dog.</s>", "A man walks a dog."),
    ("“A cat sleeps on a sofa”.", "A cat sleeps on a sofa."),
    ("[CLS] a boat [SEP] [PAD] [PAD]", "a boat"),
    ("<|im_start|>assistant\nA bird lands.<|im_end|><|endoftext|>", "A bird lands."),
    ('He said "hi" to the dog.', 'He said "hi" to the dog.'),
])
def test_clean_caption_strips_chat_artefacts(raw: str, expected: str) -> None:
    assert clean_caption(raw) == expected


def test_clean_caption_keeps_whole_sentences_within_the_word_limit() -> None:
    text = "One two three. Four five six seven. Eight nine."
    assert clean_caption(text, CleaningConfig(max_words=8)) == "One two three. Four five six seven."
    assert clean_caption(text, CleaningConfig(max_words=3)) == "One two three."


def test_truncate_cuts_an_overlong_first_sentence_at_a_word_and_ends_it() -> None:
    cut = truncate_at_sentence("a very long sentence, without any end", max_words=4, max_chars=1000)
    assert cut == "a very long sentence."
    assert len(truncate_at_sentence("x" * 10 + " " + "y" * 10 + ".", max_words=50, max_chars=15)) <= 15


def test_caption_defects_flags_short_refusals_and_loops() -> None:
    cfg = CleaningConfig(min_words=4)
    assert caption_defects("A red ball rolls to the left.", cfg) == []
    assert caption_defects("", cfg) == ["empty"]
    assert caption_defects("A ball.", cfg) == ["too short (2 words < 4)"]
    assert "refusal" in caption_defects("I'm sorry, I cannot describe this image.", cfg)
    assert "repetitive" in caption_defects("the dog runs " * 10, cfg)
    assert any(p.startswith("too long") for p in caption_defects("word " * 200, cfg))
    assert "chat tokens left in text" in caption_defects("a dog <|im_end|> runs fast", cfg)


def test_strip_artefacts_removes_nested_preambles() -> None:
    assert strip_artefacts("Okay. Here is the caption: Caption: A tree.") == "A tree."


def test_parse_entities_from_the_prompted_format() -> None:
    answer = "Caption: A man throws a red ball to a dog.\nEntities: a man; the Red Ball; dog; dog."
    caption, phrases = parse_entities(answer)
    assert caption == "A man throws a red ball to a dog."
    assert phrases == ["man", "red ball", "dog"]


def test_parse_entities_from_a_bullet_list_and_json() -> None:
    bullets = "A kitchen scene.\nObjects:\n- a person\n- kettle\n2. wooden table"
    assert parse_entities(bullets) == ("A kitchen scene.", ["person", "kettle", "wooden table"])
    as_json = 'Here you go: ```json {"caption": "Two cars race.", "entities": ["a car", "road"]} ```'
    assert parse_entities(as_json) == ("Two cars race.", ["car", "road"])


def test_parse_entities_without_a_list_returns_the_caption_only() -> None:
    assert parse_entities("Just a caption about a cat.") == ("Just a caption about a cat.", [])
    _, many = parse_entities("Entities: " + "; ".join(f"thing {i}" for i in range(30)), max_entities=5)
    assert many == [f"thing {i}" for i in range(5)]
