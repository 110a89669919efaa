"""Captions of InstVL-Synth samples: one global caption per scene and one caption per instance.

An instance caption names everything one can see of that instance (size, colour, texture, shape,
motion, where it is) plus its relation to the nearest other object, which is itself named just
precisely enough to be unique in the scene:
"a large red striped triangle near the top moving slowly to the left, left of a blue circle".
Captions are lower-case without final punctuation, the style of the paper's examples.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instvl.datasets.synth.render import DESCRIPTIONS, Track
from instvl.datasets.synth.scene import Scene, SceneObject, boxes_over_time

COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
DETAIL_LEVELS = (("colour", "shape"), ("size", "colour", "shape"), ("colour", "texture", "shape"),
                 ("size", "colour", "texture", "shape"))
"""Ever more precise ways to name a reference object; the first that is unique in the scene is used."""


def noun_phrase(obj: SceneObject, attributes: Sequence[str] = DETAIL_LEVELS[-1]) -> str:
    """'a large red striped triangle' (a plain texture is not mentioned)."""
    words = [getattr(obj, a) for a in attributes if not (a == "texture" and obj.texture == "plain")]
    text = " ".join(words)
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def motion_phrase(obj: SceneObject, scene: Scene) -> str:
    """'moving slowly to the left and back', 'standing still'; '' for images."""
    if scene.num_frames == 1:
        return ""
    if obj.motion == "still":
        return "standing still"
    text = f"moving {obj.speed} {obj.direction}"
    leaves = leaves_frame(obj, scene)
    if obj.motion == "back_and_forth":
        return text + (" and back, briefly leaving the frame" if leaves else " and back")
    return text + (" and leaving the frame" if leaves else "")


def leaves_frame(obj: SceneObject, scene: Scene) -> bool:
    """True when the whole object is outside the frame at some frame."""
    b = boxes_over_time(obj, scene.num_frames)
    outside = (b[:, 2] <= 0) | (b[:, 0] >= scene.width) | (b[:, 3] <= 0) | (b[:, 1] >= scene.height)
    return bool(outside.any())


def mean_centre(track: Track) -> NDArray[Any]:
    """Mean (x, y) of the visible boxes' centres, normalised to [0, 1]."""
    b = track.boxes
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1).mean(axis=0)


def region_phrase(centre: NDArray[Any]) -> str:
    """'near the top left', 'near the bottom', 'in the centre' from a normalised (x, y)."""
    x, y = float(centre[0]), float(centre[1])
    vertical = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    if not vertical and not horizontal:
        return "in the centre"
    return "near the " + " ".join(w for w in (vertical, horizontal) if w)


def reference_phrase(objects: Sequence[SceneObject], ref: int) -> str:
    """The shortest noun phrase that names objects[ref] and no other object of the scene."""
    others = [o for i, o in enumerate(objects) if i != ref]
    for attributes in DETAIL_LEVELS:
        key = [getattr(objects[ref], a) for a in attributes]
        if all([getattr(o, a) for a in attributes] != key for o in others):
            return noun_phrase(objects[ref], attributes)
    return noun_phrase(objects[ref])


def relation_phrase(scene: Scene, tracks: Sequence[Track], k: int) -> str:
    """'left of a blue circle': where instance k lies relative to the nearest other visible object."""
    centres = {i: mean_centre(t) for i, t in enumerate(tracks) if t.frame_index}
    if k not in centres or len(centres) < 2:
        return ""
    nearest = min((i for i in centres if i != k), key=lambda i: float(np.hypot(*(centres[i] - centres[k]))))
    dx, dy = centres[k] - centres[nearest]
    horizontal = abs(dx) >= abs(dy)
    word = ("left of" if dx < 0 else "right of") if horizontal else ("above" if dy < 0 else "below")
    return f"{word} {reference_phrase(scene.objects, nearest)}"


def background_phrase(scene: Scene) -> str:
    """'over a photo of a cat' (a video), 'on a plain grey background' (an image)."""
    return f"{'over' if scene.num_frames > 1 else 'on'} {DESCRIPTIONS[scene.background]}"


def instance_caption(scene: Scene, tracks: Sequence[Track], k: int, background: bool = False) -> str:
    """The caption of instance k (see the module docstring); with `background`, the scene's background
    follows the noun phrase ('a large red striped triangle over a photo of a cat near the top ...')."""
    obj = scene.objects[k]
    where = background_phrase(scene) if background else ""
    parts = [noun_phrase(obj), where, region_phrase(mean_centre(tracks[k])), motion_phrase(obj, scene)]
    text = " ".join(p for p in parts if p)
    relation = relation_phrase(scene, tracks, k)
    return f"{text}, {relation}" if relation else text


def global_caption(scene: Scene, keep: Sequence[int]) -> str:
    """'three objects over a photo of a cat: a large red triangle moving slowly up, ... and a ...'."""
    items = []
    for k in keep:
        obj = scene.objects[k]
        items.append(" ".join(p for p in (noun_phrase(obj), motion_phrase(obj, scene)) if p))
    count = COUNT_WORDS[len(items)] if len(items) < len(COUNT_WORDS) else str(len(items))
    noun = "object" if len(items) == 1 else "objects"
    listing = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
    head = f"{count} {noun} {background_phrase(scene)}"
    return f"{head}: {listing}" if listing else head
