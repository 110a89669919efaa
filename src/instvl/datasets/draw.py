"""Draw instance trajectories on a frame: one colour per instance id, a box and an "ID: k phrase" label.

Shared by the HTML report's thumbnails and by renders. Colours come from `geometry.instance_colour`, the
palette the VLM prompt names too, so an instance has the same colour everywhere.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from instvl.datasets.schema import InstanceRow
from instvl.geometry import box_at, instance_colour, label_text_colour, to_pixels


def draw_trajectories(frame: NDArray[Any] | Image.Image, instances: Sequence[InstanceRow], clip_frame: int, *,
                      line_width: int | None = None, labels: bool = True) -> Image.Image:
    """A copy of `frame` with each instance's box at `clip_frame` drawn in its colour and labelled.

    `instances` are instance row dicts (`records.Instance.to_row()` gives one); instances absent from
    the frame are skipped. Boxes are clipped to the image.
    """
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, np.uint8))
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = line_width or max(1, round(min(width, height) / 120))
    font = ImageFont.load_default(size=max(10, round(min(width, height) / 22)))
    for instance in instances:
        traj = instance["trajectory"]
        box = box_at(traj["frame_index"] or [], traj["box"] or [], clip_frame)
        if box is None:
            continue
        colour = instance_colour(instance["instance_id"]).rgb
        x0, y0, x1, y1 = to_pixels(box, width, height)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)  # PIL includes the end
        if labels:
            text = f"ID: {instance['instance_id']} {instance['phrase']}"
            _label(draw, font, text, (x0, y0), colour, image.size)
    return image


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
