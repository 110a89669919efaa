"""Show the VLM which instance to describe: coloured boxes labelled "ID: k" drawn on frames, or crops.

As in InstAP's pipeline, the VLM sees the sampled frames with box prompts drawn on them (Set-of-Mark
style). Each instance id keeps one colour across frames, so the prompt can name it ("the red box").
"""

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from instvl.config import BaseConfig

if TYPE_CHECKING:
    from instvl.annotate.caption.base import CaptionRequest

# Distinct, saturated colours (Sasha Trubetskoy's list) with names the prompt can use.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 25, 75)), ("green", (60, 180, 75)), ("blue", (0, 130, 200)), ("orange", (245, 130, 48)),
    ("purple", (145, 30, 180)), ("cyan", (70, 240, 240)), ("magenta", (240, 50, 230)),
    ("yellow", (255, 225, 25)), ("lime", (210, 245, 60)), ("pink", (250, 190, 212)),
)

Box = Sequence[float]


class VisualPromptConfig(BaseConfig):
    """How an instance is shown to the VLM."""

    mode: Literal["boxes", "crops"] = "boxes"
    """'boxes': draw the instance's box on each frame; 'crops': send the box region only."""
    draw_others: bool = True
    """In 'boxes' mode, also draw the other instances (their own colours) so relations can be named."""
    line_width: float = 0.008
    """Box line width as a fraction of the longer image side (at least 2 px)."""
    labels: bool = True
    """Write "ID: k" above each box."""
    crop_margin: float = 0.15
    """In 'crops' mode, grow the box by this fraction of its size on each side."""
    max_images: int = 8
    """At most this many frames per request (evenly subsampled)."""
    max_side: int = 768
    """Downscale images so that their longer side is at most this many pixels."""


def instance_colour(instance_id: int) -> tuple[str, tuple[int, int, int]]:
    """The (name, RGB) colour of an instance id; ids beyond the palette wrap around."""
    return PALETTE[instance_id % len(PALETTE)]


def to_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised xyxy box in integer pixel coordinates, clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    px = [round(min(max(v, 0.0), 1.0) * s) for v, s in ((x0, width), (y0, height), (x1, width), (y1, height))]
    return px[0], px[1], max(px[0], px[2] - 1), max(px[1], px[3] - 1)


def draw_boxes(frame: np.ndarray, marks: Sequence[tuple[int, Box]], line_width: float = 0.008,
               labels: bool = True) -> Image.Image:
    """The frame with each (instance_id, normalised xyxy box) drawn in its colour, labelled "ID: k"."""
    image = Image.fromarray(_as_rgb(frame))
    draw = ImageDraw.Draw(image)
    width_px = max(2, round(line_width * max(image.size)))
    font = ImageFont.load_default(size=max(10, round(0.035 * max(image.size))))
    for instance_id, box in marks:
        _, rgb = instance_colour(instance_id)
        x0, y0, x1, y1 = to_pixels(box, *image.size)
        draw.rectangle((x0, y0, x1, y1), outline=rgb, width=width_px)
        if labels:
            _draw_label(draw, f"ID: {instance_id}", (x0, y0), rgb, font)
    return image


def _draw_label(draw: ImageDraw.ImageDraw, text: str, corner: tuple[int, int], rgb: tuple[int, int, int],
                font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = corner[0]
    y = corner[1] - h if corner[1] >= h else corner[1]  # above the box, or inside it at the top edge
    draw.rectangle((x, y, x + w, y + h), fill=rgb)
    draw.text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if sum(rgb) > 400 else (255, 255, 255),
              font=font)


def crop_box(frame: np.ndarray, box: Box, margin: float = 0.15) -> Image.Image:
    """The region of a normalised xyxy box, grown by `margin` of its size per side, at least 2x2 px."""
    rgb = _as_rgb(frame)
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    px0, py0, px1, py1 = to_pixels((x0 - dx, y0 - dy, x1 + dx, y1 + dy), width, height)
    px1, py1 = min(width, max(px1 + 1, px0 + 2)), min(height, max(py1 + 1, py0 + 2))
    return Image.fromarray(rgb[py0:py1, px0:px1])


def fit_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so that the longer side is at most `max_side`."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def subsample_indices(count: int, limit: int) -> list[int]:
    """At most `limit` evenly spaced indices of `count` items, first and last included."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def render_request(request: "CaptionRequest") -> list[Image.Image]:
    """The images a VLM receives for one request, following the request's visual prompt settings."""
    cfg = request.visual
    target = request.instance
    if target is None:
        images = [Image.fromarray(_as_rgb(frame)) for frame in request.frames]
    else:
        visible = [t for t, box in enumerate(target.boxes) if box is not None]
        if not visible:
            raise ValueError(f"instance {target.instance_id} ({target.phrase!r}) has no box on any frame")
        images = [_render_instance_frame(request, t) for t in visible]
    keep = subsample_indices(len(images), cfg.max_images)
    return [fit_max_side(images[i], cfg.max_side) for i in keep]


def _render_instance_frame(request: "CaptionRequest", t: int) -> Image.Image:
    cfg, target = request.visual, request.instance
    frame = request.frames[t]
    if cfg.mode == "crops":
        return crop_box(frame, target.boxes[t], cfg.crop_margin)
    others = request.others if cfg.draw_others else []
    marks = [(o.instance_id, o.boxes[t]) for o in others if t < len(o.boxes) and o.boxes[t] is not None]
    return draw_boxes(frame, [*marks, (target.instance_id, target.boxes[t])], cfg.line_width, cfg.labels)


def to_data_url(image: Image.Image, image_format: Literal["jpeg", "png"] = "jpeg", quality: int = 90) -> str:
    """A base64 data URL of the image, as OpenAI-compatible chat messages carry images."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=image_format.upper(), quality=quality)
    return f"data:image/{image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {array.dtype} {array.shape}")
    return array
