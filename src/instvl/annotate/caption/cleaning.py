"""Clean VLM answers into captions, flag unusable ones, and parse 'caption + entities' answers.

    >>> clean_caption('Sure! Here is a caption: "A red ball  rolls left."<|im_end|>')
    'A red ball rolls left.'
"""

import json
import re

from instvl.annotate.phrases import unique_phrases
from instvl.config import BaseConfig

# Special tokens of the chat formats we talk to (Qwen, Llama, BERT vocab, OpenAI-style end markers).
_CHAT_TOKENS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[(?:CLS|SEP|PAD|UNK|MASK)\]|<(?:pad|unk|eos|bos)>", re.I)
_CHAT_TURN = re.compile(r"<\|im_start\|>\s*(?:assistant|system|user)?\s*", re.I)  # Qwen/ChatML turn header
_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|answer|caption|description|response)\s*:\s*", re.I)
_COURTESY = re.compile(r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|alright)\b[\s,!.:-]*", re.I)
_HERE_IS = re.compile(r"^\s*here(?:'s| is| are)\b[^:\n]{0,80}:\s*", re.I)
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*•]\s+", re.M)
# A whole answer wrapped in quotes (optionally followed by a full stop), with no quote inside.
_WRAPPED = re.compile(r"[\"“”'‘’]([^\"“”]*?)[\"“”'‘’](\.?)", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_REFUSAL = re.compile(r"\b(?:i'?m sorry|i am sorry|i cannot|i can't|as an ai|unable to (?:see|view|help))",
                      re.I)
_ENTITIES_LINE = re.compile(r"^\s*(?:salient\s+)?(?:entities|objects|noun phrases)\s*:\s*(.*)$", re.I | re.M)
_CAPTION_LINE = re.compile(r"^\s*caption\s*:\s*", re.I | re.M)


class CleaningConfig(BaseConfig):
    """How raw VLM answers become captions, and when a caption is flagged."""

    max_words: int = 120
    """Captions are cut at the last sentence boundary within this many words."""
    max_chars: int = 1000
    """... and within this many characters."""
    min_words: int = 3
    """A caption with fewer words is flagged 'too short'."""
    max_repeat_ratio: float = 0.5
    """Flag a caption whose repeated word trigrams exceed this share of all trigrams (degenerate loops)."""


def strip_artefacts(text: str) -> str:
    """Remove chat tokens, role labels, courtesy preambles, markdown and wrapping quotes; one line."""
    text = _CHAT_TOKENS.sub(" ", _CHAT_TURN.sub(" ", text))
    text = _MARKDOWN.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    for _ in range(3):  # preambles stack: "Sure! Here is the caption: Caption: ..."
        before = text
        text = _ROLE_PREFIX.sub("", _HERE_IS.sub("", _COURTESY.sub("", text)))
        if text == before:
            break
    quoted = _WRAPPED.fullmatch(text)
    return (quoted.group(1).strip() + quoted.group(2)) if quoted else text


def truncate_at_sentence(text: str, max_words: int, max_chars: int) -> str:
    """The longest prefix of whole sentences within both limits; a cut first sentence ends with '.'."""
    kept: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        candidate = " ".join([*kept, sentence])
        if len(candidate.split()) > max_words or len(candidate) > max_chars:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    words = text.split()[:max_words]
    while words and len(" ".join(words)) > max_chars - 1:
        words.pop()
    return " ".join(words).rstrip(",;:-") + "." if words else ""


def clean_caption(text: str, cfg: CleaningConfig | None = None) -> str:
    """A caption from a raw answer: artefacts stripped, whitespace collapsed, length-capped."""
    cfg = cfg or CleaningConfig()
    return truncate_at_sentence(strip_artefacts(text), cfg.max_words, cfg.max_chars)


def caption_defects(text: str, cfg: CleaningConfig | None = None) -> list[str]:
    """Reasons a (cleaned) caption should not be published as is; empty when it looks usable."""
    cfg = cfg or CleaningConfig()
    words = text.split()
    if not words:
        return ["empty"]
    problems = []
    if len(words) < cfg.min_words:
        problems.append(f"too short ({len(words)} words < {cfg.min_words})")
    if len(words) > cfg.max_words or len(text) > cfg.max_chars:
        problems.append(f"too long ({len(words)} words, {len(text)} chars)")
    if _REFUSAL.search(text):
        problems.append("refusal")
    if _CHAT_TOKENS.search(text):
        problems.append("chat tokens left in text")
    if _repeat_ratio(words) > cfg.max_repeat_ratio:
        problems.append("repetitive")
    return problems


def _repeat_ratio(words: list[str]) -> float:
    trigrams = [tuple(w.lower() for w in words[i:i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(trigrams)) / len(trigrams) if len(trigrams) >= 4 else 0.0


def parse_entities(answer: str, cfg: CleaningConfig | None = None,
                   max_entities: int = 16) -> tuple[str, list[str]]:
    """Split a 'caption + salient entities' answer into (clean caption, noun phrases for the detector).

    Accepts the format the `entities` prompt asks for ("Caption: ...", "Entities: a; b; c"), bullet
    lists after the entities label, and a JSON object {"caption": ..., "entities": [...]}.
    """
    answer = _CHAT_TOKENS.sub(" ", answer).strip()
    parsed = _parse_json_answer(answer)
    if parsed is not None:
        caption, entities = parsed
    else:
        caption, entities = _parse_labelled_answer(answer)
    phrases = unique_phrases(_drop_article(p) for p in entities if isinstance(p, str))
    return clean_caption(caption, cfg), [p for p in phrases if p and len(p) <= 60][:max_entities]


def _parse_json_answer(answer: str) -> tuple[str, list] | None:
    match = re.search(r"\{.*\}", answer, re.S)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    entities = data.get("entities") or data.get("objects") or []
    return str(data.get("caption", "")), entities if isinstance(entities, list) else [str(entities)]


def _parse_labelled_answer(answer: str) -> tuple[str, list[str]]:
    match = _ENTITIES_LINE.search(answer)
    if not match:
        return answer, []
    caption = _CAPTION_LINE.sub("", answer[: match.start()]).strip()
    tail = match.group(1) + "\n" + answer[match.end():]
    items = re.split(r"[;,\n]|^\s*(?:[-*•]|\d+[.)])\s*", tail, flags=re.M)
    return caption, [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", item) for item in items if item]


def _drop_article(phrase: str) -> str:
    return re.sub(r"^\s*(?:a|an|the)\s+", "", phrase.strip(), flags=re.I)
