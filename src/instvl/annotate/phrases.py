"""Detector phrases: noun phrases from a caption and/or a vocabulary, as GroundingDINO prompts.

GroundingDINO expects lower-case phrases, each ending with " ." ("a red ball . a dog ."), and its text
encoder sees at most 256 tokens, so long vocabularies are split into several prompts.

    >>> to_prompt(["Red Ball", "dog."])
    'red ball . dog .'
"""

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Literal

from instvl.config import BaseConfig
from instvl.deps import require

TokenCounter = Callable[[str], int]



def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DETERMINERS = _word_set(
    "a an the one two three four five six seven eight nine ten some several many another each every "
    "this that these those its their his her both all few other")
STUFF = _word_set(
    "sky skies road roads wall walls ground floor floors grass lawn water sea ocean lake river snow sand "
    "field fields street streets sidewalk pavement ceiling background foreground scene scenery view air "
    "cloud clouds fog mist sunlight daylight shadow shadows surface area side left right top "
    "bottom middle center centre distance frame image video camera shot footage clip picture time day "
    "night weather landscape horizon space room indoors outdoors setting environment way front back rest "
    "nothing something anything everything someone anyone everyone nobody")
"""Amorphous regions and words about the footage itself: never detector phrases (the prompt asks for
objects; GroundingDINO boxes 'sky' or 'road' as one huge region that tracks nothing)."""
_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
_MODIFIER_TAGS = frozenset({"JJ", "JJR", "JJS", "VBN", "CD"})
_VERB_TAGS = frozenset({"VB", "VBD", "VBP", "VBZ", "MD"})
_AFTER_VERB_TAGS = frozenset({"DT", "IN", "RP", "RB", "RBR", "TO", "PRP", "PRP$", "VBN", "JJ", "CD"})
def normalise_phrase(phrase: str) -> str:
    """Lower-case, single-spaced, without the trailing dots and punctuation of a prompt."""
    text = re.sub(r"\s+", " ", phrase.lower()).strip()
    return text.strip(" .,;:!?\"'")


def unique_phrases(phrases: Iterable[str]) -> list[str]:
    """Normalised, non-empty phrases without duplicates, in their first order."""
    seen: dict[str, None] = {}
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise TypeError(f"phrases must be strings, got {type(phrase).__name__}: {phrase!r}")
        norm = normalise_phrase(phrase)
        if norm:
            seen.setdefault(norm, None)
    return list(seen)


def to_prompt(phrases: Sequence[str]) -> str:
    """GroundingDINO's prompt form: 'a . b .' (normalised, deduplicated)."""
    return " ".join(f"{p} ." for p in unique_phrases(phrases))


def parse_prompt(prompt: str) -> list[str]:
    """The phrases of a prompt in 'a . b .' form (inverse of `to_prompt`)."""
    return unique_phrases(prompt.split("."))


def approximate_token_count(text: str) -> int:
    """Word and punctuation count plus [CLS]/[SEP]: a lower bound of a WordPiece tokenizer's count."""
    return len(re.findall(r"\w+|[^\w\s]", text)) + 2


def batch_phrases(phrases: Sequence[str], max_tokens: int = 256,
                  count_tokens: TokenCounter = approximate_token_count) -> list[list[str]]:
    """Split phrases into groups whose prompts each fit in `max_tokens` (special tokens included)."""
    groups: list[list[str]] = []
    current: list[str] = []
    for phrase in unique_phrases(phrases):
        if count_tokens(f"{phrase} .") > max_tokens:
            raise ValueError(f"phrase {phrase!r} alone exceeds the text encoder's limit of {max_tokens} "
                             "tokens")
        if current and count_tokens(to_prompt([*current, phrase])) > max_tokens:
            groups.append(current)
            current = []
        current.append(phrase)
    return groups + [current] if current else groups


def extract_noun_phrases(caption: str, max_words: int = 3) -> list[str]:
    """Noun phrases of a caption, tagged by TextBlob's pattern tagger (its lexicon ships in the wheel):
    adjective and noun runs ending in a noun, without determiners, verbs or stuff ('sky', 'road').

        >>> extract_noun_phrases("A woman picks up a red cup while the camera pans left.")
        ['woman', 'red cup']
        >>> extract_noun_phrases("Pedestrians cross the street as cars wait at the traffic light.")
        ['pedestrians', 'cars', 'traffic light']
    """
    phrases = []
    for clause in re.split(r"[.;:!?()]|\b(?:while|as|and then|then|where|when|which|who)\b", caption):
        tagged = _tag(clause)
        phrases += _chunks(tagged, max_words)
    return [p for p in unique_phrases(phrases) if not is_stuff(p)]


def is_stuff(phrase: str) -> bool:
    """True when the phrase's head (last word) is an amorphous region or the footage itself."""
    words = normalise_phrase(phrase).split()
    return not words or words[-1] in STUFF


def _tag(text: str) -> list[tuple[str, str]]:
    tagger = _tagger()
    return [(word.lower(), tag) for word, tag in tagger.tag(text)] if text.strip() else []


@lru_cache(maxsize=1)
def _tagger():
    taggers = require("textblob.en.taggers", "annotate")
    return taggers.PatternTagger()


def _chunks(tagged: list[tuple[str, str]], max_words: int) -> list[str]:
    """Maximal (modifier* noun+) runs. In a clause without a verb, a noun that disagrees in number with the
    noun before it ('camera pans', 'triangles move') and is followed by a word that cannot continue a noun
    phrase is that clause's verb: Brill's lexicon tags such words as nouns."""
    found: list[str] = []
    run: list[tuple[str, str]] = []
    determiner = ""
    verbs = [t in _VERB_TAGS for _, t in tagged]
    for i, (word, tag) in enumerate(tagged):
        next_tag = tagged[i + 1][1] if i + 1 < len(tagged) else "."
        previous = run[-1][1] if run else ""
        disagrees = (previous in ("NN", "NNP") and tag == "NNS" and determiner not in _PLURAL) or (
            previous in ("NNS", "NNPS") and tag == "NN")
        if disagrees and (next_tag in _AFTER_VERB_TAGS or next_tag in _NOUN_TAGS) and not any(verbs[:i]):
            tag = "VBZ"
            verbs[i] = True
        # 'a burning car', 'a cutting board': a participle before the noun of a run that has none yet.
        attributive = tag == "VBG" and next_tag in _NOUN_TAGS and not any(t in _NOUN_TAGS for _, t in run)
        if tag in _NOUN_TAGS or attributive or (tag in _MODIFIER_TAGS and word not in _DETERMINERS):
            if tag == "CD":
                determiner = word
                continue
            run.append((word, tag))
            continue
        found += _close(run, max_words)
        run, determiner = [], word if word in _DETERMINERS else ""
    return found + _close(run, max_words)


_PLURAL = _word_set("two three four five six seven eight nine ten some several many these those both all "
                    "few")


def _close(run: list[tuple[str, str]], max_words: int) -> list[str]:
    """The phrase of a finished run: up to its last noun, at most `max_words` words ending there."""
    last_noun = max((i for i, (_, t) in enumerate(run) if t in _NOUN_TAGS), default=-1)
    if last_noun < 0:
        return []
    words = [w for w, _ in run[: last_noun + 1]][-max_words:]
    return [" ".join(words)]


class PhraseConfig(BaseConfig):
    """Where detector phrases come from."""

    source: Literal["vocabulary", "caption", "both"] = "both"
    """'vocabulary': only `vocabulary`; 'caption': noun phrases of the global caption; 'both': union."""
    vocabulary: list[str] = []
    """Fixed phrases to always look for (e.g. ['person', 'car', 'dog'])."""
    max_words: int = 3
    """Longest noun phrase taken from a caption, in words."""
    max_phrases: int = 32
    """At most this many phrases per sample (vocabulary first)."""

    def phrases_for(self, caption: str | None = None) -> list[str]:
        """The normalised phrases to detect for one sample."""
        found = list(self.vocabulary) if self.source in ("vocabulary", "both") else []
        if caption and self.source in ("caption", "both"):
            found += extract_noun_phrases(caption, self.max_words)
        return unique_phrases(found)[: self.max_phrases]

    def from_entities(self, entities: Sequence[str]) -> list[str]:
        """A VLM's entity list as detector phrases: determiners and counts dropped ('the two dogs' ->
        'dogs'), stuff removed ('sky', 'the road'), normalised and deduplicated."""
        cleaned = []
        for entity in entities:
            words = normalise_phrase(entity).split()
            while words and words[0] in _DETERMINERS:
                words = words[1:]
            if words and not is_stuff(" ".join(words)):
                cleaned.append(" ".join(words))
        return unique_phrases(cleaned)
