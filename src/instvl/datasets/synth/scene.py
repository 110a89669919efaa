"""InstVL-Synth scenes: the shared object vocabulary, and sampling of objects and their motion.

A scene is a background plus several objects, each with a shape, colour, texture, size and a motion
over the clip. The vocabulary is shared by every scene, so the same kinds recur across samples; within a
scene, "confuser" objects copy another object's attributes but one, so that telling instances apart
needs grounding (multi-object confusion).
"""

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 175, 50), "blue": (30, 70, 230), "yellow": (240, 220, 30),
    "orange": (250, 140, 20), "purple": (140, 50, 200), "pink": (250, 110, 190), "cyan": (30, 210, 220),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "diamond", "cross", "hexagon")
TEXTURES = ("plain", "striped", "checkered", "dotted")
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.24, "large": 0.34}
"""Object side as a fraction of the frame's shorter side (jittered by a few percent per object)."""

DIRECTIONS: dict[str, tuple[float, float]] = {
    "to the left": (-1.0, 0.0), "to the right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up and to the left": (-0.7071, -0.7071), "up and to the right": (0.7071, -0.7071),
    "down and to the left": (-0.7071, 0.7071), "down and to the right": (0.7071, 0.7071),
}
SPEEDS: dict[str, float] = {"slowly": 0.2, "quickly": 0.45}
"""Distance covered over the clip, as a fraction of the frame's shorter side."""

MOTIONS = ("still", "linear", "back_and_forth")
ATTRIBUTES = ("shape", "colour", "texture", "size")


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One object: its looks, its size in pixels, and its motion (start centre plus displacement)."""

    shape: str
    colour: str
    texture: str
    size: str
    side: int
    motion: str = "still"
    direction: str = ""
    speed: str = ""
    start: tuple[float, float] = (0.0, 0.0)
    displacement: tuple[float, float] = (0.0, 0.0)

    @property
    def looks(self) -> tuple[str, str, str, str]:
        return self.shape, self.colour, self.texture, self.size

    def centres(self, num_frames: int) -> NDArray[Any]:
        """(T, 2) float centres (x, y) in pixels at each frame."""
        s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
        if self.motion == "back_and_forth":
            s = 1.0 - np.abs(2.0 * s - 1.0)
        elif self.motion == "still":
            s = np.zeros_like(s)
        return np.asarray(self.start) + s[:, None] * np.asarray(self.displacement)


@dataclass(frozen=True, slots=True)
class Scene:
    """A background choice, the frame geometry and the objects (list order = instance id)."""

    width: int
    height: int
    num_frames: int
    background: str
    objects: tuple[SceneObject, ...]
    draw_order: tuple[int, ...]
    """Instance ids from back to front."""


@dataclass(frozen=True, slots=True)
class Difficulty:
    """Settings that make scenes harder to track (the defaults draw exactly the classic scenes)."""

    occlusion: bool = False
    """Objects may overlap (pass behind one another) and leave the frame."""
    confuser_fraction: float = 0.5
    same_colour_confusers: bool = False
    """Confusers keep the colour of the object they copy."""
    entering_fraction: float = 0.0
    """Chance that a moving object's path starts (enters) or ends (leaves) outside the frame."""
    speed_scale: float = 1.0
    confuser_attributes: tuple[str, ...] = ATTRIBUTES
    """The attributes a confuser may change (in `ATTRIBUTES` order)."""
    family_motion: bool = False
    """Confusers move like the object they copy."""


def sample_looks(rng: np.random.Generator, taken: list[SceneObject], confuser_fraction: float,
                 attributes: tuple[str, ...] = ATTRIBUTES) -> tuple[dict[str, Any], SceneObject | None]:
    """Shape, colour, texture and size for a new object, distinct from those in `taken`, and the object it
    copies (None: drawn afresh). A confuser changes one of `attributes` (in `ATTRIBUTES` order)."""
    for _ in range(100):
        source = None
        if taken and rng.random() < confuser_fraction:
            # Copy an existing object and change one attribute: the two differ in a single word.
            source = taken[rng.integers(len(taken))]
            looks = dict(zip(ATTRIBUTES, source.looks, strict=True))
            changed = attributes[rng.integers(len(attributes))]
            looks[changed] = _pick(rng, choices(changed))
        else:
            looks = {name: _pick(rng, choices(name)) for name in ATTRIBUTES}
        if tuple(looks[a] for a in ATTRIBUTES) not in {o.looks for o in taken}:
            return looks, source
    raise RuntimeError("could not sample distinct object looks")  # the config refuses too few variants


def changeable(attributes: tuple[str, ...], same_colour: bool) -> tuple[str, ...]:
    """The attributes a confuser may change: `attributes`, less colour when confusers keep it."""
    return tuple(a for a in attributes if not (same_colour and a == "colour"))


def choices(attribute: str) -> tuple[str, ...]:
    """The values one attribute takes."""
    return {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES, "size": tuple(SIZES)}[attribute]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def sample_motion(rng: np.random.Generator, short_side: int, is_video: bool,
                  speed_scale: float = 1.0) -> dict[str, Any]:
    """Motion kind, direction, speed and displacement (pixels over the whole clip)."""
    if not is_video:
        return {}
    motion = MOTIONS[rng.choice(3, p=(0.2, 0.5, 0.3))]
    if motion == "still":
        return {"motion": motion}
    direction, speed = _pick(rng, tuple(DIRECTIONS)), _pick(rng, tuple(SPEEDS))
    distance = SPEEDS[speed] * short_side * rng.uniform(0.9, 1.1) * speed_scale
    dx, dy = DIRECTIONS[direction]
    return {"motion": motion, "direction": direction, "speed": speed,
            "displacement": (dx * distance, dy * distance)}


class _NoRoom(Exception):
    """The object's path does not fit the frame."""


def place(rng: np.random.Generator, obj: SceneObject, width: int, height: int, occlusion: bool,
          crossing_edge: bool = False) -> SceneObject:
    """Pick a start centre; without occlusion the whole path stays inside the frame. With `crossing_edge`
    (a linear mover) the object enters the frame from outside, or leaves it, half the time each."""
    half = obj.side / 2
    dx, dy = obj.displacement
    if crossing_edge and obj.motion == "linear":
        # One end of the path fully inside, the other fully outside the frame.
        inside = np.array([rng.uniform(half, width - half), rng.uniform(half, height - half)])
        entering = bool(rng.random() < 0.5)
        start = inside - np.array([dx, dy]) if entering else inside
        end = start + np.array([dx, dy])
        outside = end if not entering else start
        if -half <= outside[0] <= width + half and -half <= outside[1] <= height + half:
            raise _NoRoom
        return replace(obj, start=(float(start[0]), float(start[1])))
    if occlusion:
        # Start fully inside; the path may then leave the frame (and come back for back-and-forth).
        lo_x, hi_x, lo_y, hi_y = half, width - half, half, height - half
    else:
        lo_x, hi_x = half - min(dx, 0.0), width - half - max(dx, 0.0)
        lo_y, hi_y = half - min(dy, 0.0), height - half - max(dy, 0.0)
    if lo_x > hi_x or lo_y > hi_y:
        raise _NoRoom
    return replace(obj, start=(rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)))


def boxes_over_time(obj: SceneObject, num_frames: int) -> NDArray[Any]:
    """(T, 4) pixel boxes x0, y0, x1, y1 of the whole object (visible or not)."""
    centres = obj.centres(num_frames)
    half = obj.side / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def overlaps(a: SceneObject, b: SceneObject, num_frames: int, gap: float = 2.0) -> bool:
    """True when the two objects' boxes come closer than `gap` pixels in any frame."""
    ba, bb = boxes_over_time(a, num_frames), boxes_over_time(b, num_frames)
    apart_x = (ba[:, 2] + gap <= bb[:, 0]) | (bb[:, 2] + gap <= ba[:, 0])
    apart_y = (ba[:, 3] + gap <= bb[:, 1]) | (bb[:, 3] + gap <= ba[:, 1])
    return bool(np.any(~(apart_x | apart_y)))


def sample_object(rng: np.random.Generator, taken: list[SceneObject], width: int, height: int,
                  num_frames: int, hard: Difficulty) -> SceneObject | None:
    """A new object that fits the scene, or None when none fits after a bounded number of tries."""
    short_side = min(width, height)
    attributes = changeable(hard.confuser_attributes, hard.same_colour_confusers)
    looks, source = sample_looks(rng, taken, hard.confuser_fraction, attributes)
    # A family that moves together: every placement try keeps the source's motion (drawn only when asked
    # for, so that scenes without it stay byte-identical).
    follow = hard.family_motion and source is not None and num_frames > 1
    side = max(6, round(SIZES[looks["size"]] * short_side * rng.uniform(0.92, 1.08)))
    # Drawn only when asked for, so that scenes without it stay byte-identical.
    crossing_edge = bool(hard.entering_fraction and rng.random() < hard.entering_fraction)
    for attempt in range(60):
        # After half the tries, fall back to a still object, which fits far more easily.
        if follow:
            assert source is not None
            motion: dict[str, Any] = {"motion": source.motion, "direction": source.direction,
                                      "speed": source.speed, "displacement": source.displacement}
        else:
            motion = sample_motion(rng, short_side, num_frames > 1 and attempt < 30, hard.speed_scale)
        try:
            obj = place(rng, SceneObject(side=side, **looks, **motion), width, height, hard.occlusion,
                        crossing_edge and attempt < 30)
        except _NoRoom:
            continue
        if hard.occlusion or not any(overlaps(obj, other, num_frames) for other in taken):
            return obj
    return None


def sample_scene(rng: np.random.Generator, width: int, height: int, num_frames: int, num_objects: int,
                 background: str, hard: Difficulty | None = None) -> Scene:
    """Sample up to `num_objects` objects (fewer only when the frame has no room left)."""
    hard = hard or Difficulty()
    objects: list[SceneObject] = []
    for _ in range(num_objects):
        obj = sample_object(rng, objects, width, height, num_frames, hard)
        if obj is not None:
            objects.append(obj)
    draw_order = tuple(int(i) for i in rng.permutation(len(objects)))
    return Scene(width, height, num_frames, background, tuple(objects), draw_order)
