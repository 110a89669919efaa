"""Draw instance trajectories on a frame: one colour per instance id, a box and an "ID: k phrase" label.

Shared by the HTML report's thumbnails and by renders, so an instance has the same colour everywhere
(`instance_colour` for pixels, `instance_hex` for the matching caption text in HTML).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)
"""Distinct colours (Sasha Trubetskoy's list); instance k gets PALETTE[k % len(PALETTE)]."""


def instance_colour(instance_id: int) -> tuple[int, int, int]:
    """The RGB colour of an instance id (stable across frames, thumbnails and renders)."""
    return PALETTE[int(instance_id) % len(PALETTE)]


def instance_hex(instance_id: int) -> str:
    """The instance's colour as a CSS hex string, e.g. '#e6194b'."""
    return "#{:02x}{:02x}{:02x}".format(*instance_colour(instance_id))


def label_text_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tags, white on dark ones, so labels stay readable on every palette colour."""
    return (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)


def _field(instance: Any, name: str) -> Any:
    return instance[name] if isinstance(instance, Mapping) else getattr(instance, name)


def box_at(instance: Any, frame_index: int) -> list[float] | None:
    """The instance's normalised xyxy box at `frame_index`, or None when it is not on that frame."""
    traj = _field(instance, "trajectory")
    frames = list(_field(traj, "frame_index") or [])
    if frame_index not in frames:
        return None
    return [float(v) for v in _field(traj, "box")[frames.index(frame_index)]]


def draw_trajectories(frame: np.ndarray | Image.Image, instances: Sequence[Any], frame_index: int, *,
                      line_width: int | None = None, labels: bool = True) -> Image.Image:
    """A copy of `frame` with each instance's box at `frame_index` drawn in its colour and labelled.

    `instances` are `records.Instance` objects or instance row dicts; instances absent from the frame
    are skipped. Boxes are clipped to the image.
    """
    image = (frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, np.uint8))).convert("RGB")
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = line_width or max(1, round(min(width, height) / 120))
    font = ImageFont.load_default(size=max(10, round(min(width, height) / 22)))
    for instance in instances:
        box = box_at(instance, frame_index)
        if box is None:
            continue
        colour = instance_colour(_field(instance, "instance_id"))
        x0, y0, x1, y1 = _to_pixels(box, width, height)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        if labels:
            _label(draw, font, f"ID: {_field(instance, 'instance_id')} {_field(instance, 'phrase')}", (x0, y0),
                   colour, image.size)
    return image


def _to_pixels(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return (round(x0 * (width - 1)), round(y0 * (height - 1)),
            round(max(x0, x1) * (width - 1)), round(max(y0, y1) * (height - 1)))


def _label(draw: ImageDraw.ImageDraw, font: Any, text: str, corner: tuple[int, int],
           colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    """Text on a filled tag above the box (inside it when the box touches the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tag_w, tag_h = right - left + 4, bottom - top + 4
    width, height = size
    x = max(0, min(corner[0], width - tag_w))  # keep the whole tag on the image
    y = corner[1] - tag_h if corner[1] - tag_h >= 0 else min(corner[1], height - tag_h)
    draw.rectangle((x, y, x + tag_w, y + tag_h), fill=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=label_text_colour(colour), font=font)
