"""Detector phrases: noun phrases from a caption and/or a vocabulary, as GroundingDINO prompts.

GroundingDINO expects lower-case phrases, each ending with " ." ("a red ball . a dog ."), and its text
encoder sees at most 256 tokens, so long vocabularies are split into several prompts.

    >>> to_prompt(["Red Ball", "dog."])
    'red ball . dog .'
"""

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from instvl.config import BaseConfig

TokenCounter = Callable[[str], int]



def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DETERMINERS = _word_set(
    "a an the one two three four five six seven eight nine ten some several many another each every "
    "this that these those its their his her")
_SINGULAR = _word_set("a an one another each every this that")
# Words that end a noun phrase: prepositions, conjunctions, auxiliaries, pronouns and common verbs.
_STOPWORDS = _word_set(
    "and or but with without on in at of to from into onto over under above below behind beside near by "
    "across along around through toward towards while as than then is are was were be been being has have "
    "had does do did can could will would it they he she we you who which that there here while moves move "
    "moving appears appear stands sits lies runs walks flies rolls slides bounces passes crosses goes left "
    "right up down slowly quickly together against between")
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")


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
            raise ValueError(f"phrase {phrase!r} alone exceeds the text encoder's limit of {max_tokens} tokens")
        if current and count_tokens(to_prompt([*current, phrase])) > max_tokens:
            groups.append(current)
            current = []
        current.append(phrase)
    return groups + [current] if current else groups


def extract_noun_phrases(caption: str, max_words: int = 3) -> list[str]:
    """Noun phrases that follow a determiner or number ('a small red ball rolls' -> 'small red ball').

    A light rule-based chunker: a phrase starts after a determiner and ends at a stop word,
    punctuation, `max_words` words, or (after a singular determiner) a likely verb ending in -s.
    """
    phrases = []
    for clause in re.split(r"[.,;:!?()]", caption.lower()):
        words = _WORD.findall(clause)
        for i, word in enumerate(words):
            if word in _DETERMINERS:
                chunk = _chunk_after(words[i + 1:], singular=word in _SINGULAR, max_words=max_words)
                if chunk:
                    phrases.append(" ".join(chunk))
    return unique_phrases(phrases)


def _chunk_after(words: Sequence[str], singular: bool, max_words: int) -> list[str]:
    chunk: list[str] = []
    for word in words:
        if word in _STOPWORDS or word in _DETERMINERS or word.endswith("ly"):
            break
        if singular and chunk and _looks_like_verb(word):
            break
        chunk.append(word)
        if len(chunk) == max_words:
            break
    return chunk


def _looks_like_verb(word: str) -> bool:
    return word.endswith("s") and not word.endswith(("ss", "us", "is", "ous"))


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
