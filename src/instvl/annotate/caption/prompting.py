"""Prompt templates (package files `annotate/prompts/*.txt` or user files) and their rendering.

Templates use `string.Template` placeholders (`$phrase`, `${instance_id}`), so braces and JSON in a
prompt need no escaping. Fields: `media`, `max_words` (all); `instance_id`, `phrase`, `colour`,
`marker`, `others` (instance); `max_entities` (entities).
"""

import string
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from instvl.annotate.caption.request import InstanceInfo, RequestKind, VisualPromptConfig
from instvl.config import BaseConfig
from instvl.geometry import instance_colour

TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "global": frozenset({"media", "max_words"}),
    "instance": frozenset({"media", "max_words", "instance_id", "phrase", "colour", "marker", "others"}),
    "entities": frozenset({"media", "max_words", "max_entities"}),
}


class PromptConfig(BaseConfig):
    """Which prompt templates are used and how instances are shown."""

    global_template: str = "global"
    """A package prompt name (annotate/prompts/<name>.txt) or a path to a .txt file."""
    instance_template: str = "instance"
    entities_template: str = "entities"
    visual: VisualPromptConfig = VisualPromptConfig()
    max_words: int = 80
    """Length asked for in the prompt (the cleaner enforces its own limit)."""
    max_entities: int = 12
    """Entities asked for in the 'entities' prompt."""

    def template_for(self, kind: RequestKind) -> str:
        return {"global": self.global_template, "instance": self.instance_template,
                "entities": self.entities_template}[kind]


def package_prompt_names() -> list[str]:
    """Names of the prompt templates shipped with instvl."""
    root = resources.files("instvl") / "annotate" / "prompts"
    return sorted(f.name[:-4] for f in root.iterdir() if f.name.endswith(".txt"))


@lru_cache(maxsize=64)
def load_template(name_or_path: str) -> string.Template:
    """A prompt template by package name ('instance') or by path to a UTF-8 text file."""
    path = Path(name_or_path)
    if path.suffix == ".txt" and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        ref = resources.files("instvl") / "annotate" / "prompts" / f"{name_or_path}.txt"
        if not ref.is_file():
            raise FileNotFoundError(f"no prompt file or package prompt named {name_or_path!r} "
                                    f"(package prompts: {', '.join(package_prompt_names())})")
        text = ref.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"prompt template {name_or_path!r} is empty")
    return string.Template(text.strip())


def describe_media(num_frames: int) -> str:
    if num_frames == 1:
        return "an image"
    return f"{num_frames} frames sampled in order from a video clip"


def describe_marker(target: InstanceInfo, visual: VisualPromptConfig) -> str:
    colour = instance_colour(target.instance_id).name
    if visual.mode == "crops":
        return f"Each image is a close-up crop around instance ID: {target.instance_id} on one frame."
    return f'The instance to describe is marked by a {colour} box labelled "ID: {target.instance_id}".'


def describe_others(others: Sequence[InstanceInfo], visual: VisualPromptConfig) -> str:
    if not others:
        return "There are no other tracked instances."
    drawn = visual.mode == "boxes" and visual.draw_others
    parts = []
    for other in others:
        colour = f", {instance_colour(other.instance_id).name} box" if drawn else ""
        parts.append(f'ID: {other.instance_id} ("{other.phrase}"{colour})')
    return "Other tracked instances: " + "; ".join(parts) + "."


def render_prompt(kind: RequestKind, prompts: PromptConfig, num_frames: int,
                  instance: InstanceInfo | None = None, others: Sequence[InstanceInfo] = ()) -> str:
    """The prompt text of one request, from the configured template of its kind."""
    fields: dict[str, object] = {"media": describe_media(num_frames), "max_words": prompts.max_words,
                                 "max_entities": prompts.max_entities}
    if kind == "instance":
        if instance is None:
            raise ValueError("an 'instance' prompt needs the instance to describe")
        fields |= {"instance_id": instance.instance_id, "phrase": instance.phrase,
                   "colour": instance_colour(instance.instance_id).name,
                   "marker": describe_marker(instance, prompts.visual),
                   "others": describe_others(others, prompts.visual)}
    name = prompts.template_for(kind)
    try:
        return load_template(name).substitute(fields)
    except (KeyError, ValueError) as err:
        known = ", ".join(sorted(TEMPLATE_FIELDS[kind]))
        raise ValueError(f"prompt template {name!r} ({kind}) has a bad placeholder {err}; "
                         f"fields for this kind: {known}") from err
