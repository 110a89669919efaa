"""The self-contained HTML report of `instvl datasets inspect`: statistics tables and a gallery of
sample cards.

Each card shows a few frames with the trajectories drawn (images embedded as base64 JPEG data URIs,
so the single HTML file can be mailed or archived), the global caption, the instance captions in their
box colours, and a link to `renders/<sample_id>.gif|.mp4` when such a render sits beside the report.
"""

import base64
import html
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from instvl import __version__
from instvl.datasets import layout
from instvl.datasets.draw import draw_trajectories
from instvl.datasets.reader import ShardReader
from instvl.geometry import instance_colour, instance_hex, label_text_colour
from instvl.media.decode import decode_frames, media_of
from instvl.media.fetch import MediaError

log = logging.getLogger(__name__)

Table = tuple[str, list[str], list[list[object]]]
"""A titled table: (title, column headers, rows), as `inspect.stats_tables` makes them."""
RENDER_SUFFIXES = (".gif", ".mp4", ".webm")


@dataclass
class SampleCard:
    """What one gallery card shows."""

    sample_id: str
    media_type: str
    size: str
    global_caption: str
    instances: list[tuple[int, str, str, str]] = field(default_factory=list)
    """(instance id, phrase, caption, css colour), one per instance."""
    thumbnails: list[tuple[int, str]] = field(default_factory=list)  # frame index, data URI
    render_href: str | None = None
    note: str | None = None


def frames_to_show(row: dict[str, Any], count: int) -> list[int]:
    """Up to `count` frame indices spread over the frames that carry boxes (else over the clip)."""
    instances = row.get("instances") or []
    boxed = sorted({i for inst in instances for i in inst["trajectory"]["frame_index"] or []})
    candidates = boxed or list(range(max(1, row.get("num_frames") or 1)))
    return evenly_spaced(candidates, count)


def evenly_spaced(indices: list[int], count: int) -> list[int]:
    """Up to `count` entries of `indices` spread evenly from the first to the last."""
    if len(indices) <= count:
        return list(indices)
    positions = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[p] for p in dict.fromkeys(positions.tolist())]


def scale_to_width(frame: NDArray[Any], width: int) -> Image.Image:
    """The frame resized to `width` (aspect kept); boxes are drawn afterwards so labels stay legible."""
    image = Image.fromarray(frame)
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def thumbnail_uri(image: Image.Image) -> str:
    """The image as a JPEG data URI."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_card(row: dict[str, Any], frames_per_sample: int, thumb_width: int,
               render_dir: Path | None) -> SampleCard:
    """One card from a full row dict (media included)."""
    instances = row.get("instances") or []
    card = SampleCard(row["sample_id"], row["media_type"], f"{row.get('width')}x{row.get('height')}",
                      row.get("global_caption") or "",
                      [(i["instance_id"], i.get("phrase") or "", i.get("caption") or "",
                        instance_hex(i["instance_id"])) for i in instances])
    media = media_of(row)
    if media is None:
        card.note = "media not embedded and source file not found: no thumbnails"
    else:
        try:
            decoded = decode_frames(media, row["sample_id"], frames_to_show(row, frames_per_sample),
                                    decoder="pyav", on_missing="drop")
            for i, frame in zip(decoded.indices.tolist(), decoded.frames, strict=True):
                drawn = draw_trajectories(scale_to_width(frame, thumb_width), instances, i)
                card.thumbnails.append((i, thumbnail_uri(drawn)))
        except MediaError as err:
            card.note = f"media does not decode: {err.reason}"
    card.render_href = find_render(render_dir, row["sample_id"])
    return card


def find_render(render_dir: Path | None, sample_id: str) -> str | None:
    """Relative link to a render of the sample beside the report, if one exists."""
    if render_dir is None:
        return None
    for suffix in RENDER_SUFFIXES:
        if (render_dir / f"{sample_id}{suffix}").is_file():
            return f"{layout.RENDERS_DIR}/{sample_id}{suffix}"
    return None


def build_cards(root: str | Path, count: int, frames_per_sample: int = 4, thumb_width: int = 240,
                render_dir: Path | None = None) -> list[SampleCard]:
    """Cards for the first `count` samples of the dataset (reads one small batch at a time)."""
    cards: list[SampleCard] = []
    if count <= 0:
        return cards
    for batch in ShardReader(root, batch_rows=min(count, 16)).iter_batches():
        for row in batch.to_pylist():
            cards.append(build_card(row, frames_per_sample, thumb_width, render_dir))
            if len(cards) >= count:
                return cards
    return cards


def table_html(title: str, headers: list[str], rows: list[list[object]]) -> str:
    """One statistics table as an HTML section (numbers right-aligned)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    body = body or f'<tr><td colspan="{len(headers)}">(none)</td></tr>'
    return (f'<section class="stat-table"><h3>{html.escape(title)}</h3>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="num">{value}</td>' if numeric else f"<td>{html.escape(str(value))}</td>"


def card_html(card: SampleCard) -> str:
    """One gallery card; every text from the dataset is escaped."""
    esc = html.escape
    sample_id = esc(card.sample_id)
    figures = "".join(
        f'<figure><img src="{uri}" alt="frame {i} of {sample_id}"><figcaption>frame {i}</figcaption></figure>'
        for i, uri in card.thumbnails)
    items = "".join(
        f'<li style="border-color: {colour}">'
        f'<span class="tag" style="background: {colour}; color: {_ink(k)}">ID: {k} {esc(phrase)}</span> '
        f'<span class="caption">{esc(caption)}</span></li>' for k, phrase, caption, colour in card.instances)
    render = (f'<a href="{esc(card.render_href)}">rendered clip</a>' if card.render_href
              else f'<span class="none">no render yet (instvl datasets render ROOT {sample_id})</span>')
    note = f'<p class="note">{esc(card.note)}</p>' if card.note else ""
    meta = f"{esc(card.media_type)} {esc(card.size)}, {len(card.instances)} instances"
    return (f'<article class="card" id="sample-{sample_id}" data-sample-id="{sample_id}">'
            f"<h3>{sample_id}</h3>"
            f'<div class="meta">{meta}</div>'
            f'<div class="frames">{figures}</div>{note}'
            f'<p class="global-caption">{esc(card.global_caption)}</p>'
            f'<ul class="instances">{items}</ul><p class="render">{render}</p></article>')


def _ink(instance_id: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*label_text_colour(instance_colour(instance_id).rgb))


def render_html(title: str, subtitle: str, tables: list[Table], cards: list[SampleCard], banner: str = "",
                models: Sequence[str] = ()) -> str:
    """The full report page from the packaged template; `banner` is a warning shown across the header
    (random weights), `models` the provenance lines shown under the title."""
    template = Template((resources.files("instvl.datasets") / "templates" / "report.html").read_text())
    banner_html = f'<div class="banner" role="alert">{html.escape(banner)}</div>' if banner else ""
    models_html = ('<ul class="models">' + "".join(f"<li>{html.escape(m)}</li>" for m in models) + "</ul>"
                   if models else "")
    return template.substitute(
        title=html.escape(title), subtitle=html.escape(subtitle), version=__version__, banner=banner_html,
        models=models_html,
        tables="\n".join(table_html(*t) for t in tables),
        gallery="\n".join(card_html(c) for c in cards) or '<p class="note">no samples</p>')


def write_report(path: Path, root: str | Path, tables: list[Table], *, samples: int, instances: int,
                 num_samples: int = 8, frames_per_sample: int = 4, thumb_width: int = 240,
                 title: str | None = None, banner: str = "", models: Sequence[str] = ()) -> Path:
    """Write the report of the dataset at `root` to `path`: its statistics `tables` (with the `samples`
    and `instances` totals in the subtitle) and cards of its first `num_samples` samples; `banner` and
    `models` head the page (see `render_html`)."""
    cards = build_cards(root, num_samples, frames_per_sample, thumb_width, path.parent / layout.RENDERS_DIR)
    title = title or f"InstVL dataset: {Path(root).resolve().name}"
    subtitle = (f"{Path(root).resolve()} | {samples} samples, {instances} instances | "
                f"generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by instvl {__version__}")
    page = render_html(title, subtitle, tables, cards, banner, models)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d sample cards)", path, len(cards))
    return path
