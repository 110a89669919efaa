"""The images of a request: clean frames, frames with coloured boxes labelled "ID: k", crops, video frames.

As in InstAP's pipeline, the VLM sees the sampled frames with box prompts drawn on them (Set-of-Mark
style). Each instance id keeps its palette colour (`geometry.instance_colour`), so the prompt can name
it ("the red box") and the report and renders show it in the same colour. In 'prefix' mode every request
of a clip opens with the same clean frames, so an engine's prefix cache reuses them (`VisualPromptConfig`).
"""

import base64
import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from instvl.annotate.caption.request import CaptionRequest, InstanceInfo, VisualPromptConfig
from instvl.geometry import BoxLike, box_area, grow_box, instance_colour, label_text_colour, to_pixels


def draw_boxes(frame: np.ndarray, marks: Sequence[tuple[int, BoxLike]], line_width: float = 0.008,
               labels: bool = True) -> Image.Image:
    """The frame with each (instance_id, normalised xyxy box) drawn in its colour, labelled "ID: k"."""
    image = Image.fromarray(_as_rgb(frame))
    draw = ImageDraw.Draw(image)
    width_px = max(2, round(line_width * max(image.size)))
    font = ImageFont.load_default(size=max(10, round(0.035 * max(image.size))))
    for instance_id, box in marks:
        rgb = instance_colour(instance_id).rgb
        x0, y0, x1, y1 = to_pixels(box, *image.size)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=rgb, width=width_px)  # PIL includes the end
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
    draw.text((x + 2 - left, y + 2 - top), text, fill=label_text_colour(rgb), font=font)


def crop_box(frame: np.ndarray, box: BoxLike, margin: float = 0.15) -> Image.Image:
    """The region of a normalised xyxy box, grown by `margin` of its size per side, at least 2x2 px."""
    rgb = _as_rgb(frame)
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = to_pixels(grow_box(box, margin), width, height)
    x1, y1 = min(width, max(x1, x0 + 2)), min(height, max(y1, y0 + 2))
    return Image.fromarray(rgb[y0:y1, x0:x1])


def fit_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so that the longer side is at most `max_side`."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def prefix_size(width: int, height: int, cfg: VisualPromptConfig) -> tuple[int, int]:
    """The (width, height) of a 'prefix'-mode image of a width x height frame: at most `max_side`, sides
    rounded to `pixel_multiple` (as Qwen2.5-VL's processor rounds them, so it leaves the image alone)."""
    scale = min(1.0, cfg.max_side / max(width, height))
    step = cfg.pixel_multiple
    return tuple(max(step, round(max(1, round(side * scale)) / step) * step)  # type: ignore[return-value]
                 for side in (width, height))


def subsample_indices(count: int, limit: int) -> list[int]:
    """At most `limit` evenly spaced indices of `count` items, first and last included."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def shared_indices(request: CaptionRequest) -> list[int]:
    """The frames a request shows clean: those of a global or entities request, and in 'prefix' mode the
    shared frames that open every request of the clip (the same for all of them)."""
    return subsample_indices(len(request.frames), request.visual.shared_frames())


def marked_indices(target: InstanceInfo, count: int) -> list[int]:
    """The frames drawn with boxes after the shared frames in 'prefix' mode: `count` evenly spaced frames
    where the instance is visible; for one, the frame where its box is largest."""
    visible = [t for t, box in enumerate(target.boxes) if box is not None]
    if count == 1 and visible:
        return [max(visible, key=lambda t: box_area(target.boxes[t]))]  # type: ignore[arg-type]
    return [visible[i] for i in subsample_indices(len(visible), count)] if count else []


def render_request(request: CaptionRequest) -> list[Image.Image]:
    """The images a VLM receives for one request, following the request's visual prompt settings; in
    'prefix' mode the shared clean frames come first, and for a video request the images are its frames."""
    cfg = request.visual
    target = request.instance
    if request.as_video:
        keep = subsample_indices(len(request.frames), cfg.max_video_frames)
        return [fit_max_side(Image.fromarray(_as_rgb(request.frames[t])), cfg.max_side) for t in keep]
    if cfg.mode == "prefix":
        return _render_prefix(request)
    if target is None:
        images = [Image.fromarray(_as_rgb(frame)) for frame in request.frames]
    else:
        visible = [(t, box) for t, box in enumerate(target.boxes) if box is not None]
        if not visible:
            raise ValueError(f"instance {target.instance_id} ({target.phrase!r}) has no box on any frame")
        images = [_render_instance_frame(request, target.instance_id, t, box) for t, box in visible]
    keep = subsample_indices(len(images), cfg.max_images)
    return [fit_max_side(images[i], cfg.max_side) for i in keep]


def _render_prefix(request: CaptionRequest) -> list[Image.Image]:
    """The shared clean frames (identical for every request of the clip), then the instance's marked ones."""
    cfg, target = request.visual, request.instance
    height, width = _as_rgb(request.frames[0]).shape[:2]
    size = prefix_size(width, height, cfg)
    images = [_resized(Image.fromarray(_as_rgb(request.frames[t])), size) for t in shared_indices(request)]
    if target is not None:
        if not any(box is not None for box in target.boxes):
            raise ValueError(f"instance {target.instance_id} ({target.phrase!r}) has no box on any frame")
        for t in marked_indices(target, cfg.marked_frames):
            box = target.boxes[t]
            assert box is not None  # marked frames are frames where the instance is visible
            images.append(_resized(_render_instance_frame(request, target.instance_id, t, box), size))
    return images


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def _render_instance_frame(request: CaptionRequest, instance_id: int, t: int, box: BoxLike) -> Image.Image:
    """Frame t with the instance's `box` drawn (the others' too, in their colours), or its crop."""
    cfg, frame = request.visual, request.frames[t]
    if cfg.mode == "crops":
        return crop_box(frame, box, cfg.crop_margin)
    others = request.others if cfg.draw_others else []
    shown = [(o.instance_id, o.boxes[t]) for o in others if t < len(o.boxes)]
    marks: list[tuple[int, BoxLike]] = [(k, b) for k, b in shown if b is not None]
    return draw_boxes(frame, [*marks, (instance_id, box)], cfg.line_width, cfg.labels)


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
