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

import numpy as np

from instvl.annotate.caption.request import InstanceInfo, RequestKind, VisualPromptConfig
from instvl.annotate.caption.visual_prompt import marked_indices, prefix_size, subsample_indices
from instvl.config import BaseConfig
from instvl.geometry import BoxLike, instance_colour, to_pixels

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


def describe_media(num_frames: int, video: bool = False) -> str:
    if video:
        return "a video clip"
    if num_frames == 1:
        return "an image"
    return f"{num_frames} frames sampled in order from a video clip"


def describe_marker(target: InstanceInfo, visual: VisualPromptConfig,
                    frames: Sequence[np.ndarray] = ()) -> str:
    colour = instance_colour(target.instance_id).name
    drawn = f'a {colour} box labelled "ID: {target.instance_id}"'
    if visual.mode == "crops":
        return f"Each image is a close-up crop around instance ID: {target.instance_id} on one frame."
    if visual.mode == "prefix":
        grid = _Grid(frames, visual)
        text = (f"The instance to describe, ID: {target.instance_id}, is given by its bounding box "
                f"[x_min, y_min, x_max, y_max] {grid.unit()}: {grid.track(target)}.")
        marked = len(marked_indices(target, visual.marked_frames))
        if marked:
            again = ("The last image repeats a frame" if marked == 1
                     else f"The last {marked} images repeat frames")
            text += f" {again} with it marked by {drawn}."
        return text
    return f"The instance to describe is marked by {drawn}."


def describe_others(others: Sequence[InstanceInfo], visual: VisualPromptConfig,
                    frames: Sequence[np.ndarray] = ()) -> str:
    if not others:
        return "There are no other tracked instances."
    prefix = visual.mode == "prefix" and visual.draw_others
    drawn = visual.draw_others and (visual.mode == "boxes" or (prefix and visual.marked_frames > 0))
    grid = _Grid(frames, visual) if prefix else None
    parts = []
    for other in others:
        colour = f", {instance_colour(other.instance_id).name} box" if drawn else ""
        boxes = f"; {grid.track(other)}" if grid is not None else ""
        parts.append(f'ID: {other.instance_id} ("{other.phrase}"{colour}{boxes})')
    return "Other tracked instances: " + "; ".join(parts) + "."


class _Grid:
    """Box coordinates on the shared frames of a 'prefix'-mode request, numbered from 1 as they are shown,
    in the configured convention (pixels of the image as sent, per mille or fractions)."""

    def __init__(self, frames: Sequence[np.ndarray], visual: VisualPromptConfig) -> None:
        if not len(frames):
            raise ValueError("box coordinates need the request's frames")
        height, width = np.asarray(frames[0]).shape[:2]
        self.visual = visual
        self.size = prefix_size(width, height, visual)
        self.indices = subsample_indices(len(frames), visual.shared_frames())

    def unit(self) -> str:
        if self.visual.coordinates == "pixels":
            return f"in pixels of the {self.size[0]}x{self.size[1]} frames"
        if self.visual.coordinates == "per-mille":
            return "in thousandths (0 to 1000) of the frame's width and height"
        return "in fractions (0 to 1) of the frame's width and height"

    def coords(self, box: BoxLike) -> str:
        if self.visual.coordinates == "pixels":
            values: Sequence[object] = to_pixels(box, *self.size)
        elif self.visual.coordinates == "per-mille":
            values = [round(float(v) * 1000) for v in box]
        else:
            values = [f"{float(v):.3f}" for v in box]
        return "[" + ", ".join(str(v) for v in values) + "]"

    def track(self, info: InstanceInfo) -> str:
        """'frame 1 [x0, y0, x1, y1], frame 2 [...]; not visible in frames 3, 4'."""
        seen = [f"frame {n} {self.coords(info.boxes[t])}"  # type: ignore[arg-type]
                for n, t in enumerate(self.indices, 1) if info.boxes[t] is not None]
        hidden = [str(n) for n, t in enumerate(self.indices, 1) if info.boxes[t] is None]
        text = ", ".join(seen) if seen else "not visible in any of these frames"
        if seen and hidden:
            text += f"; not visible in frame{'s' if len(hidden) > 1 else ''} {', '.join(hidden)}"
        return text


def media_shown(kind: RequestKind, visual: VisualPromptConfig, frames: Sequence[np.ndarray],
                instance: InstanceInfo | None = None) -> str:
    """How the prompt names what the VLM is shown: the frames its images show (a video, for video input)."""
    if kind != "instance" and visual.video:
        return describe_media(len(frames), video=True)
    if visual.mode == "prefix" or instance is None:
        return describe_media(min(len(frames), visual.shared_frames()))
    return describe_media(min(sum(b is not None for b in instance.boxes), visual.max_images))


def render_prompt(kind: RequestKind, prompts: PromptConfig, frames: Sequence[np.ndarray],
                  instance: InstanceInfo | None = None, others: Sequence[InstanceInfo] = ()) -> str:
    """The prompt text of one request over the clip's sampled `frames`, from the template of its kind."""
    visual = prompts.visual
    fields: dict[str, object] = {"media": media_shown(kind, visual, frames, instance),
                                 "max_words": prompts.max_words, "max_entities": prompts.max_entities}
    if kind == "instance":
        if instance is None:
            raise ValueError("an 'instance' prompt needs the instance to describe")
        fields |= {"instance_id": instance.instance_id, "phrase": instance.phrase,
                   "colour": instance_colour(instance.instance_id).name,
                   "marker": describe_marker(instance, visual, frames),
                   "others": describe_others(others, visual, frames)}
    name = prompts.template_for(kind)
    try:
        return load_template(name).substitute(fields)
    except (KeyError, ValueError) as err:
        known = ", ".join(sorted(TEMPLATE_FIELDS[kind]))
        raise ValueError(f"prompt template {name!r} ({kind}) has a bad placeholder {err}; "
                         f"fields for this kind: {known}") from err
