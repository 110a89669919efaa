"""Drawing InstVL-Synth scenes: backgrounds from scikit-image's photos, textured sprites, frames, and the
ground truth read back from what was drawn (so boxes and masks match the pixels, occlusion included).
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from instvl.datasets.records import encode_rle
from instvl.datasets.synth.scene import COLOURS, Scene

PHOTOS: dict[str, str] = {
    "astronaut": "a photo of an astronaut", "chelsea": "a photo of a cat",
    "coffee": "a photo of a cup of coffee", "rocket": "a photo of a rocket on its launch pad",
    "hubble_deep_field": "a photo of distant galaxies",
    "immunohistochemistry": "a microscope image of stained tissue", "camera": "a photo of a cameraman",
    "brick": "a photo of a brick wall", "grass": "a photo of grass", "gravel": "a photo of gravel",
    "coins": "a photo of old coins", "moon": "a photo of the moon's surface", "clock": "a photo of a clock",
}
"""scikit-image sample photos (shipped inside its wheel, so offline) and how captions describe them."""
PLAIN = "plain"
DESCRIPTIONS = {**PHOTOS, PLAIN: "a plain grey background"}
SHADE = 0.5
"""Textures alternate the object's colour with this darker shade of it, so the colour stays readable."""


@dataclass(slots=True)
class Rendered:
    """Frames (T, H, W, 3) uint8 and, per pixel, the id of the front-most object there (-1: background)."""

    frames: NDArray[Any]
    labels: NDArray[Any]


@dataclass(slots=True)
class Track:
    """Where one object is visible: frame indices, xyxy boxes normalised to [0, 1], optional COCO RLEs."""

    frame_index: list[int]
    boxes: NDArray[Any]
    mask_rle: list[str]


@lru_cache(maxsize=len(PHOTOS))
def load_photo(name: str) -> NDArray[Any]:
    """A scikit-image sample photo as (H, W, 3) uint8 (grey photos are replicated to three channels)."""
    from instvl.deps import require

    data = require("skimage.data", "video")
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.uint8)
    image.flags.writeable = False
    return image


def background_image(rng: np.random.Generator, name: str, width: int, height: int) -> NDArray[Any]:
    """A random crop of photo `name`, resized to (height, width); or a plain grey gradient."""
    if name == PLAIN:
        level = rng.uniform(70, 170)
        ramp = np.linspace(level - 25, level + 25, height)[:, None, None]
        return np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    photo = load_photo(name)
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.35, 1.0) * min(pw / width, ph / height)
    cw, ch = max(8, int(width * scale)), max(8, int(height * scale))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[y0:y0 + ch, x0:x0 + cw]))
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))


def _shape_mask(shape: str, side: int) -> NDArray[Any]:
    """(side, side) bool silhouette of `shape`."""
    if shape in ("square", "cross", "ring"):
        c = (np.arange(side) + 0.5) / side * 2 - 1
        u, v = np.abs(c)[None, :], np.abs(c)[:, None]
        r2 = u**2 + v**2
        return {"square": np.maximum(u, v) <= 0.9,
                "cross": ((u <= 0.33) | (v <= 0.33)) & (np.maximum(u, v) <= 0.95),
                "ring": (r2 <= 1.0) & (r2 >= 0.45**2)}[shape]
    canvas = Image.new("L", (side, side), 0)
    draw, last = ImageDraw.Draw(canvas), side - 1
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=255)
    else:
        draw.polygon(_polygon(shape, side), fill=255)
    return np.asarray(canvas) > 127


def _polygon(shape: str, side: int) -> list[tuple[float, float]]:
    radius, centre = (side - 1) / 2, (side - 1) / 2
    if shape == "triangle":
        unit = [(0.0, -1.0), (1.0, 0.9), (-1.0, 0.9)]
    elif shape == "diamond":
        unit = [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
    elif shape == "hexagon":
        unit = [(np.cos(a), np.sin(a)) for a in np.arange(6) * np.pi / 3]
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        unit = [(r * np.cos(a), r * np.sin(a)) for r, a in zip([1.0, 0.45] * 5, angles, strict=True)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [(centre + radius * x, centre + radius * y) for x, y in unit]


def _texture_pattern(texture: str, side: int) -> NDArray[Any]:
    """(side, side) bool: True where the texture shows the darker shade."""
    i, j = np.mgrid[0:side, 0:side]
    period = max(2, side // 5)
    if texture == "plain":
        return np.zeros((side, side), bool)
    if texture == "striped":
        return ((i + j) // period) % 2 == 1
    if texture == "checkered":
        return ((i // period) + (j // period)) % 2 == 1
    if texture == "dotted":
        cell = max(4, side // 3)
        di, dj = (i % cell) - cell / 2 + 0.5, (j % cell) - cell / 2 + 0.5
        return di**2 + dj**2 <= (cell * 0.3) ** 2
    raise ValueError(f"unknown texture {texture!r}")


@lru_cache(maxsize=4096)
def sprite(shape: str, colour: str, texture: str, side: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """(mask (side, side) bool, pixels (side, side, 3) uint8) of one object's look; cached, read-only."""
    base = np.asarray(COLOURS[colour], np.float32)
    dark = _texture_pattern(texture, side)
    pixels = np.where(dark[:, :, None], base * SHADE, base).astype(np.uint8)
    mask = _shape_mask(shape, side)
    mask.flags.writeable = pixels.flags.writeable = False
    return mask, pixels


def render(scene: Scene, background: NDArray[Any]) -> Rendered:
    """Draw every object over `background` at each frame, back to front."""
    t_count, h, w = scene.num_frames, scene.height, scene.width
    frames = np.repeat(background[None], t_count, axis=0)
    labels = np.full((t_count, h, w), -1, np.int16)
    for k in scene.draw_order:
        obj = scene.objects[k]
        mask, pixels = sprite(obj.shape, obj.colour, obj.texture, obj.side)
        corners = np.rint(obj.centres(t_count) - obj.side / 2).astype(int)
        for t, (x0, y0) in enumerate(corners):
            _paste(frames[t], labels[t], k, mask, pixels, int(x0), int(y0))
    return Rendered(frames, labels)


def _paste(frame: NDArray[Any], labels: NDArray[Any], k: int, mask: NDArray[Any], pixels: NDArray[Any],
           x0: int, y0: int) -> None:
    """Draw a sprite with its top-left corner at (x0, y0), clipped to the frame."""
    side, (h, w) = mask.shape[0], labels.shape
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if fx0 >= fx1 or fy0 >= fy1:
        return  # wholly outside the frame
    sub = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    frame[fy0:fy1, fx0:fx1][sub] = pixels[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0][sub]
    labels[fy0:fy1, fx0:fx1][sub] = k


def tracks(labels: NDArray[Any], num_objects: int, masks: bool = False) -> list[Track]:
    """Per object, the frames where any of its pixels is visible, with the box of those pixels."""
    t_count, h, w = labels.shape
    scale = np.array([w, h, w, h], np.float32)
    out = []
    for k in range(num_objects):
        visible = labels == k
        rows, cols = visible.any(axis=2), visible.any(axis=1)
        frames = np.flatnonzero(rows.any(axis=1))
        if frames.size == 0:
            out.append(Track([], np.zeros((0, 4), np.float32), []))
            continue
        r, c = rows[frames], cols[frames]
        y0, y1 = r.argmax(1), h - r[:, ::-1].argmax(1)
        x0, x1 = c.argmax(1), w - c[:, ::-1].argmax(1)
        boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32) / scale
        rles = [encode_rle(visible[t]) for t in frames] if masks else []
        out.append(Track([int(t) for t in frames], boxes, rles))
    return out
