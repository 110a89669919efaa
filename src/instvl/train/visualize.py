"""Pictures of what the evaluation saw: retrieval grids and text-to-scene attention overlays, as PNG.

- `retrieval_grid`: one row per caption query - the caption, then its top-k retrieved frames, framed
  green when correct and red when not.
- `attention_overlay`: the frames of a clip with a text query's attention over the scene tokens drawn
  as a heat map, plus the predicted (yellow) and ground-truth (green) boxes when given.
"""

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

GAP = 6
CAPTION_BAND = 30
CORRECT, WRONG = (40, 180, 70), (220, 50, 50)
PRED_BOX, TRUE_BOX = (250, 220, 40), (40, 220, 90)


def clip_to_uint8(video: Any) -> NDArray[Any]:
    """A model-input clip [3, T, H, W] (any normalisation) as display frames [T, H, W, 3] uint8."""
    array = np.asarray(video.detach().cpu().float() if hasattr(video, "detach") else video, dtype=np.float32)
    if array.ndim != 4 or array.shape[0] != 3:
        raise ValueError(f"expected a clip [3, T, H, W], got shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled.transpose(1, 2, 3, 0) * 255).round().astype(np.uint8)


def _thumbnail(frame: NDArray[Any], size: int) -> Image.Image:
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def retrieval_grid(path: str | Path, queries: Sequence[str], thumbnails: Sequence[NDArray[Any]],
                   ranked: Sequence[Sequence[int]], correct: Sequence[Sequence[bool]],
                   thumb_size: int = 96, text_width: int = 260) -> Path:
    """Draw each query caption beside its ranked gallery frames (indices into `thumbnails`).

    The image is `text_width + k * (thumb_size + GAP) + GAP` wide and
    `len(queries) * (thumb_size + GAP) + GAP` high, k being the longest ranking.
    """
    if not (len(queries) == len(ranked) == len(correct)):
        raise ValueError(f"{len(queries)} queries but {len(ranked)} rankings and {len(correct)} "
                         "correctness rows")
    k = max((len(r) for r in ranked), default=0)
    cell = thumb_size + GAP
    canvas = Image.new("RGB", (text_width + k * cell + GAP, len(queries) * cell + GAP), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    chars = max(8, text_width // 7)
    for row, (query, items, marks) in enumerate(zip(queries, ranked, correct, strict=True)):
        top = GAP + row * cell
        lines = textwrap.wrap(query, chars)[: max(1, thumb_size // 12)]
        draw.multiline_text((GAP, top), "\n".join(lines), fill="black", font=font)
        for col, (item, ok) in enumerate(zip(items, marks, strict=True)):
            left = text_width + col * cell
            canvas.paste(_thumbnail(thumbnails[item], thumb_size), (left, top))
            draw.rectangle([left, top, left + thumb_size - 1, top + thumb_size - 1],
                           outline=CORRECT if ok else WRONG, width=3)
    return _save(canvas, path)


def heat_colours(values: NDArray[Any]) -> NDArray[Any]:
    """Values in [0, 1] -> jet-like RGB uint8 (blue low, red high)."""
    x = np.clip(values, 0, 1)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peaks
    return (np.clip(1.5 - np.abs(4 * (x - centres)), 0, 1) * 255).astype(np.uint8)


def _overlay_frame(frame: NDArray[Any], attention: NDArray[Any], alpha: float) -> Image.Image:
    height, width = frame.shape[:2]
    peak = float(attention.max())
    normalised = attention / peak if peak > 0 else attention
    heat = Image.fromarray((normalised * 255).astype(np.uint8))
    heat = heat.resize((width, height), Image.Resampling.BILINEAR)
    colours = heat_colours(np.asarray(heat, dtype=np.float32) / 255)
    blended = (1 - alpha) * frame.astype(np.float32) + alpha * colours.astype(np.float32)
    return Image.fromarray(blended.round().astype(np.uint8))


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], left: int, top: int, width: int, height: int,
              colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    draw.rectangle([left + x0 * width, top + y0 * height, left + x1 * width, top + y1 * height],
                   outline=colour, width=2)


def attention_overlay(path: str | Path, frames: NDArray[Any], attention: NDArray[Any], caption: str = "",
                      pred_boxes: NDArray[Any] | None = None, true_boxes: NDArray[Any] | None = None,
                      alpha: float = 0.5, scale: int = 1) -> Path:
    """Frames [T, H, W, 3] side by side with attention [t, h, w] (t token frames spread over T) on top.

    Boxes are xyxy normalised to [0, 1], one per frame. Frames are enlarged `scale` times (pixel
    repetition, for small training resolutions); the image is `T * W * scale` wide and
    `H * scale + CAPTION_BAND` high.
    """
    frames, attention = np.asarray(frames), np.asarray(attention, dtype=np.float32)
    if frames.ndim != 4 or attention.ndim != 3:
        raise ValueError(f"need frames [T, H, W, 3] and attention [t, h, w], got {frames.shape} and "
                         f"{attention.shape}")
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    num, height, width = frames.shape[:3]
    canvas = Image.new("RGB", (num * width, height + CAPTION_BAND), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, GAP), textwrap.shorten(caption, max(10, num * width // 7)), fill="black",
              font=ImageFont.load_default())
    for t in range(num):
        token_frame = t * attention.shape[0] // num
        canvas.paste(_overlay_frame(frames[t], attention[token_frame], alpha), (t * width, CAPTION_BAND))
        for boxes, colour in ((true_boxes, TRUE_BOX), (pred_boxes, PRED_BOX)):
            if boxes is not None:
                _draw_box(draw, boxes[t], t * width, CAPTION_BAND, width, height, colour)
    return _save(canvas, path)
