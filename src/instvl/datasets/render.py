"""Render one sample as an animated GIF or an MP4: every frame with its trajectories, ids and captions.

    instvl datasets render out/corpus synth-0-0000003                  # -> out/corpus/renders/<id>.gif
    render_samples("out/corpus", count=4)                               # what `datasets inspect` links

Each frame shows the boxes of the instances annotated on that frame ("ID: k phrase" tags, one colour per
instance, as in the HTML report). Between two annotated frames of an instance its last box is shown
faded rather than interpolated, so the render never shows a box the annotator did not produce. The
global caption sits in a band above the picture, the instance captions in their colours below it.
"""

import logging
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from instvl.config import BaseConfig
from instvl.datasets import layout
from instvl.datasets.draw import draw_trajectories
from instvl.datasets.manifest import NotADatasetError
from instvl.datasets.reader import ShardReader
from instvl.datasets.schema import InstanceRow, SampleRow, TrajectoryRow
from instvl.geometry import box_at, instance_colour
from instvl.media.decode import decode_frames, media_of
from instvl.media.fetch import MediaError

log = logging.getLogger(__name__)

RenderFormat = Literal["gif", "mp4"]
BAND_COLOUR = (18, 18, 18)
TEXT_COLOUR = (240, 240, 240)
FADE = 0.4
"""Opacity of a held box on frames between two annotated frames of its instance."""
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class RenderConfig(BaseConfig):
    """`instvl datasets render ROOT SAMPLE_ID`: one sample's frames, boxes and captions as a GIF or MP4."""

    root: str
    """The dataset root."""
    sample_id: str
    """The sample to render."""
    output: str | None = None
    """The file to write; default ROOT/renders/<sample_id>.<format>."""
    format: RenderFormat | None = None
    """gif or mp4; default from the output's suffix, else gif."""
    fps: float | None = None
    """Playback rate; default the sample's own fps (8 for images)."""
    max_side: int = 480
    """Long side of the picture in pixels: larger clips shrink, small ones grow by a whole factor."""


class RenderError(ValueError):
    """The sample cannot be rendered; the message names the sample and the problem."""


@dataclass(frozen=True)
class Layout:
    """Where things go on every rendered frame: a header band, the picture, a footer band."""

    width: int
    picture_height: int
    header: list[tuple[str, tuple[int, int, int]]]
    footer: list[tuple[str, tuple[int, int, int]]]
    line_height: int
    font: Font

    @property
    def header_height(self) -> int:
        return self._band(len(self.header))

    @property
    def footer_height(self) -> int:
        return self._band(len(self.footer))

    @property
    def height(self) -> int:
        return self.header_height + self.picture_height + self.footer_height

    def _band(self, lines: int) -> int:
        return lines * self.line_height + (self.line_height // 2 if lines else 0)


def display_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The picture size: long side shrunk to `max_side`, or grown by the largest whole factor that fits."""
    long_side = max(width, height)
    scale = max_side / long_side if long_side > max_side else max(1, max_side // long_side)
    return max(2, round(width * scale)), max(2, round(height * scale))


def wrap(text: str, font: Font, width: int) -> list[str]:
    """Lines of `text` that fit `width` pixels (long words are broken)."""
    average = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    return textwrap.wrap(text, width=max(8, int(width / average))) or [""]


def plan_layout(row: SampleRow, width: int, picture_height: int) -> Layout:
    """The bands for this sample: the global caption above, one wrapped caption per instance below."""
    size = max(11, round(width / 36))
    # A FreeType font of that size, or Pillow's fixed bitmap font where FreeType is missing.
    font = ImageFont.load_default(size=size)
    usable = width - 12
    caption = row.get("global_caption") or "(no global caption)"
    header = [(line, TEXT_COLOUR) for line in wrap(caption, font, usable)]
    header.append(("", TEXT_COLOUR))  # the frame counter goes here, drawn per frame
    footer = []
    for inst in row.get("instances") or []:
        text = f"ID: {inst['instance_id']} {inst.get('phrase') or ''}: {inst.get('caption') or ''}"
        footer += [(line, instance_colour(inst["instance_id"]).rgb) for line in wrap(text, font, usable)]
    line_height = round(size * 1.3)
    return Layout(width, picture_height, header, footer, line_height, font)


def held_boxes(instances: Sequence[InstanceRow], clip_frame: int) -> list[InstanceRow]:
    """For instances not annotated on `clip_frame` but annotated before and after it: their last box."""
    held: list[InstanceRow] = []
    for inst in instances:
        frames, boxes = inst["trajectory"]["frame_index"] or [], inst["trajectory"]["box"] or []
        box = box_at(frames, boxes, clip_frame, mode="hold")
        if box is not None and box_at(frames, boxes, clip_frame) is None:
            last: TrajectoryRow = {"frame_index": [clip_frame], "box": [list(box)], "mask_rle": [],
                                   "score": []}
            held.append({**inst, "trajectory": last})
    return held


def compose(frame: NDArray[Any], row: SampleRow, frame_index: int, total: int, layout: Layout) -> Image.Image:
    """One rendered frame: header band, picture with boxes (held ones faded), footer band."""
    picture = Image.fromarray(frame).convert("RGB").resize((layout.width, layout.picture_height),
                                                            Image.Resampling.LANCZOS)
    instances = row.get("instances") or []
    held = held_boxes(instances, frame_index)
    if held:
        picture = Image.blend(picture, draw_trajectories(picture, held, frame_index), FADE)
    picture = draw_trajectories(picture, instances, frame_index)
    canvas = Image.new("RGB", (layout.width, layout.height), BAND_COLOUR)
    canvas.paste(picture, (0, layout.header_height))
    draw = ImageDraw.Draw(canvas)
    counter = f"{row['sample_id']}  frame {frame_index + 1}/{total}"
    header = [*layout.header[:-1], (counter, (150, 150, 150))]
    _text_lines(draw, layout, header, top=0)
    _text_lines(draw, layout, layout.footer, top=layout.header_height + layout.picture_height)
    return canvas


def _text_lines(draw: ImageDraw.ImageDraw, layout: Layout, lines: list[tuple[str, tuple[int, int, int]]],
                top: int) -> None:
    for n, (text, colour) in enumerate(lines):
        y = top + layout.line_height // 4 + n * layout.line_height
        draw.text((6, y), text, fill=colour, font=layout.font)


def sample_frames(row: SampleRow) -> list[tuple[int, NDArray[Any]]]:
    """Every decodable frame of the sample's media, in order; raises RenderError."""
    media = media_of(row)
    if media is None:
        raise RenderError(f"sample {row['sample_id']}: media not embedded and source file not found")
    count = 1 if row["media_type"] == "image" else max(1, int(row.get("num_frames") or 1))
    try:
        decoded = decode_frames(media, row["sample_id"], range(count), decoder="pyav", on_missing="drop")
    except MediaError as err:
        raise RenderError(f"sample {row['sample_id']}: media does not decode: {err.reason}") from err
    return list(zip(decoded.indices.tolist(), decoded.frames, strict=True))


def render_frames(row: SampleRow, max_side: int = 480) -> tuple[list[Image.Image], Layout]:
    """The rendered frames of a row dict (media included) and the layout they share."""
    frames = sample_frames(row)
    height, width = frames[0][1].shape[:2]
    layout = plan_layout(row, *display_size(width, height, max_side))
    total = len(frames)
    return [compose(frame, row, index, total, layout) for index, frame in frames], layout


def save_gif(frames: list[Image.Image], path: Path, fps: float,
             exact: Sequence[tuple[int, int, int]]) -> None:
    """An endless-loop GIF with one shared palette that holds the `exact` colours unchanged."""
    fixed = list(dict.fromkeys(exact))[:64]
    step = max(1, len(frames) // 8)  # the adaptive part of the palette comes from a few spread-out frames
    sample = frames[::step][:8]
    montage = Image.new("RGB", (sample[0].width, sample[0].height * len(sample)))
    for n, frame in enumerate(sample):
        montage.paste(frame, (0, n * frame.height))
    quantized = montage.quantize(256 - len(fixed), method=Image.Quantize.MEDIANCUT)
    adaptive = (quantized.getpalette() or [])[: 3 * (256 - len(fixed))]  # a "P" image always has one
    # Pillow maps pixels to a palette through a coarse colour cache: a near twin of an exact colour would
    # capture that colour's pixels, so adaptive entries close to one are dropped.
    spread = [tuple(adaptive[i:i + 3]) for i in range(0, len(adaptive), 3)]
    spread = [c for c in spread
              if all(max(abs(a - b) for a, b in zip(c, f, strict=True)) > 12 for f in fixed)]
    entries = [v for colour in [*fixed, *spread] for v in colour]
    palette = Image.new("P", (1, 1))
    palette.putpalette(entries + [0] * (768 - len(entries)))
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    indexed[0].save(path, format="GIF", save_all=True, append_images=indexed[1:], loop=0,
                    duration=max(20, round(1000 / fps)), optimize=False, disposal=1)


def save_mp4(frames: list[Image.Image], path: Path, fps: float) -> None:
    """H.264 MP4 through PyAV (odd sizes are rounded down to even by the encoder helper)."""
    from instvl.media.encode import encode_mp4

    path.write_bytes(encode_mp4((np.asarray(f) for f in frames), fps, crf=18))


def render_sample(row: SampleRow, path: str | Path, *, format: RenderFormat | None = None,
                  fps: float | None = None, max_side: int = 480) -> Path:
    """Write the render of a row dict to `path` (GIF or MP4, from `format` or the suffix); returns it."""
    path = Path(path)
    kind = format or ("mp4" if path.suffix.lower() == ".mp4" else "gif")
    frames, _layout = render_frames(row, max_side)
    rate = fps or row.get("fps") or 8.0
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "mp4":
        save_mp4(frames, path, rate)
    else:
        palette = [instance_colour(i["instance_id"]).rgb for i in row.get("instances") or []]
        exact = [BAND_COLOUR, TEXT_COLOUR, *palette]
        save_gif(frames, path, rate, exact)
    log.info("rendered %s (%d frames) to %s", row["sample_id"], len(frames), path)
    return path


def find_row(root: str | Path, sample_id: str) -> SampleRow:
    """The full row of `sample_id` (only the row group that holds it is read with its media)."""
    reader = ShardReader(root, columns=["sample_id"])
    for piece in reader.pieces():
        ids = [r["sample_id"] for r in reader.iter_rows([piece])]
        if sample_id in ids:
            full = ShardReader(root, batch_rows=max(1, piece[2]))
            return next(r for r in full.iter_rows([piece]) if r["sample_id"] == sample_id)
    raise RenderError(f"{root}: no sample with id {sample_id!r}")


def render_samples(root: str | Path, sample_ids: Sequence[str] | None = None, count: int | None = None,
                   out_dir: str | Path | None = None, *, format: RenderFormat = "gif",
                   max_side: int = 320) -> list[Path]:
    """Render the given samples, or the first `count` of the dataset, into OUT_DIR/<sample_id>.<format>.

    Samples that cannot be rendered (no media, undecodable) are logged and skipped.
    """
    out = Path(out_dir) if out_dir is not None else Path(root) / layout.RENDERS_DIR
    rows: Iterator[SampleRow]
    if sample_ids is not None:
        rows = (find_row(root, sample_id) for sample_id in sample_ids)
    else:
        rows = _first_rows(root, count or 0)
    written = []
    for row in rows:
        try:
            path = out / f"{row['sample_id']}.{format}"
            written.append(render_sample(row, path, format=format, max_side=max_side))
        except RenderError as err:
            log.warning("not rendered: %s", err)
    return written


def _first_rows(root: str | Path, count: int) -> Iterator[SampleRow]:
    if count <= 0:
        return
    for n, row in enumerate(ShardReader(root, batch_rows=min(count, 16)).iter_rows()):
        if n >= count:
            return
        yield row


def main(cfg: RenderConfig) -> int:
    """Render `cfg.sample_id` of `cfg.root` and print where it went."""
    kind = cfg.format or ("mp4" if (cfg.output or "").lower().endswith(".mp4") else "gif")
    default = Path(cfg.root) / layout.RENDERS_DIR / f"{cfg.sample_id}.{kind}"
    output = Path(cfg.output) if cfg.output else default
    try:
        row = find_row(cfg.root, cfg.sample_id)
        path = render_sample(row, output, format=kind, fps=cfg.fps, max_side=cfg.max_side)
    except (RenderError, NotADatasetError) as err:
        print(f"instvl datasets render: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0
