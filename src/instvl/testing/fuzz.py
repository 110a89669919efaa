"""A media fuzz corpus and a run over it: every input must end annotated or quarantined by name.

`make_corpus` writes byte-mutated copies of a small MP4, JPEG and PNG (fixed seeds: the same corpus on
every machine) plus odd media a real crawl meets: an image over Pillow's decompression-bomb limit, a
video without frames, one frame, odd codecs and containers, extreme aspect ratios, a file name that is
not UTF-8. `run_corpus` annotates the folder unit by unit (the fake models, so the fault boundaries of
fetching, probing, decoding and writing are what is exercised) and accounts for every input.

Used by tests/annotate/test_fuzz.py (a CI-sized corpus) and bench/fuzz.py (a larger one, files/s).
"""

import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instvl.datasets.schema import reason_code
from instvl.testing.media import huge_png, jpeg_bytes, moving_square, mp4_bytes, png_bytes

MUTATIONS = ("flip", "truncate", "insert", "zero", "duplicate")


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption of `data`: flipped bytes, a cut, inserted noise, a zeroed or repeated span."""
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    buf = bytearray(data)
    if kind == "flip":
        for position in rng.integers(0, len(buf), int(rng.integers(1, 17))):
            buf[position] ^= int(rng.integers(1, 256))
        return bytes(buf)
    start = int(rng.integers(0, len(buf)))
    span = int(rng.integers(1, max(2, len(buf) // 8)))
    if kind == "truncate":
        return bytes(buf[:start])
    if kind == "insert":
        return bytes(buf[:start]) + rng.integers(0, 256, span, np.uint8).tobytes() + bytes(buf[start:])
    if kind == "zero":
        buf[start:start + span] = bytes(len(buf[start:start + span]))
        return bytes(buf)
    return bytes(buf[:start + span]) + bytes(buf[start:])  # duplicate


def seeds() -> dict[str, bytes]:
    """The valid files every mutation starts from (small: a build of them is quick)."""
    frames, _boxes = moving_square(8, 64, 48, seed=3)
    return {"mp4": mp4_bytes(frames), "jpg": jpeg_bytes(frames[0]), "png": png_bytes(frames[0])}


def encode_video(frames: np.ndarray, container: str, codec: str, pix_fmt: str = "yuv420p",
                 fps: int = 8) -> bytes:
    """Frames in any container and codec PyAV can write (an empty `frames` gives a stream without frames)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{codec!r} is not a video codec")
        stream.width, stream.height = (frames.shape[2], frames.shape[1]) if len(frames) else (64, 48)
        stream.pix_fmt = pix_fmt
        output.start_encoding()  # the header, even when no frame follows
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def odd_media() -> dict[str, bytes]:
    """Valid-but-odd and plainly broken media, by file name."""
    from PIL import Image

    frames, _boxes = moving_square(8, 64, 48, seed=5)
    odd: dict[str, bytes] = {
        "bomb_200mpx.png": huge_png(),
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 20,
        "zero_frames.mp4": encode_video(frames[:0], "mp4", "libx264"),
        "zero_frames.mkv": encode_video(frames[:0], "matroska", "ffv1"),
        "hevc.mp4": encode_video(frames, "mp4", "libx265"),
        "one_frame.mp4": encode_video(frames[:1], "mp4", "libx264"),
        "mjpeg.avi": encode_video(frames, "avi", "mjpeg", "yuvj420p"),
        "vp9.webm": encode_video(frames, "webm", "libvpx-vp9"),
        "ffv1.mkv": encode_video(frames, "matroska", "ffv1", "yuv420p"),
        "mpeg4.mov": encode_video(frames, "mov", "mpeg4"),
        "tall_16x2048.png": png_bytes(np.zeros((2048, 16, 3), np.uint8)),
        "tiny_1x1.jpg": jpeg_bytes(np.zeros((1, 1, 3), np.uint8)),
        "gif_named.jpg": _pil_bytes(Image.fromarray(frames[0]), "GIF"),
        "cmyk.jpg": _pil_bytes(Image.fromarray(frames[0]).convert("CMYK"), "JPEG"),
        "grey16.png": _pil_bytes(Image.fromarray(np.full((48, 64), 40000, np.uint16)), "PNG"),
        "video_named.jpg": mp4_bytes(frames),
    }
    return odd


def _pil_bytes(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_corpus(folder: Path, mutated: int = 200, seed: int = 0, odd: bool = True) -> list[str]:
    """Write `mutated` corrupted copies of the seeds (fixed per `seed`) and the odd media into `folder`;
    returns the file names (as str; the non-UTF-8 one surrogate-escaped, as `os.listdir` gives it)."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = seeds()
    kinds = sorted(bases)
    names = []
    for index in range(mutated):
        rng = np.random.default_rng([seed, index])
        ext = kinds[index % len(kinds)]
        name = f"fuzz-{index:04d}.{ext}"
        (folder / name).write_bytes(mutate(bases[ext], rng))
        names.append(name)
    if odd:
        for name, data in odd_media().items():
            (folder / name).write_bytes(data)
            names.append(name)
        raw = os.fsencode(folder) + b"/latin1-\xe9t\xe9.mp4"
        with open(raw, "wb") as f:
            f.write(mp4_bytes(moving_square(8, 64, 48, seed=7)[0]))
        names.append(os.fsdecode(b"latin1-\xe9t\xe9.mp4"))
    return names


@dataclass
class FuzzResult:
    """How every input of a corpus ended."""

    files: int
    annotated: int
    quarantined: Counter = field(default_factory=Counter)
    """(stage, reason kind) -> files."""
    crashed: list[str] = field(default_factory=list)
    """Units that failed (every input of such a unit is unaccounted for)."""
    unaccounted: list[str] = field(default_factory=list)
    """Inputs neither annotated nor quarantined."""
    seconds: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "annotated": self.annotated,
                "quarantined": sum(self.quarantined.values()),
                "quarantined_by_reason": {f"{stage}: {kind}": n for (stage, kind), n in
                                          sorted(self.quarantined.items())},
                "crashed_units": self.crashed, "unaccounted": self.unaccounted,
                "seconds": round(self.seconds, 2), "files_per_s": round(self.files_per_s, 2)}


def reason_class(reason: str) -> str:
    """The class of a quarantine reason: its code (the exception type), or the first words of a long one."""
    head = reason_code(reason)
    return head if len(head) <= 40 else " ".join(head.split()[:3])


def run_corpus(folder: Path, out: Path, *overrides: str, sources_per_unit: int = 16) -> FuzzResult:
    """Plan and annotate `folder` into `out` with the fake preset, unit by unit; account for every file."""
    import pyarrow.parquet as pq

    from instvl.annotate.config import AnnotateConfig
    from instvl.annotate.plan import make_plan
    from instvl.annotate.units import run_unit
    from instvl.config import load_config
    from instvl.datasets.reader import read_table
    from instvl.datasets.writer import safe_text

    cfg = load_config(AnnotateConfig, "annotate/fake", [
        "ingest.min_clip_s=0", "ingest.num_frames=4", "ingest.max_short_side=64", *overrides],
        values={"input": str(folder), "output": str(out), "out.sources_per_unit": sources_per_unit})
    started = time.monotonic()
    plan = make_plan(cfg)
    crashed = []
    for unit in plan.units:
        try:
            run_unit(cfg, unit.unit_id)
        except Exception as err:  # what the fuzz run exists to find
            crashed.append(f"{unit.unit_id}: {type(err).__name__}: {err}")
    seconds = time.monotonic() - started
    annotated = {row["source"]["uri"] for row in read_table(out, columns=["source"]).to_pylist()}
    quarantined: dict[str, tuple[str, str]] = {}
    for path in sorted((out / "quarantine").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            quarantined.setdefault(row["uri"], (row["stage"], reason_class(row["reason"])))
    inputs = [safe_text(uri) for unit in plan.units for uri in unit.sources]
    unaccounted = [uri for uri in inputs if uri not in annotated and uri not in quarantined]
    kinds = Counter(quarantined[uri] for uri in inputs if uri in quarantined and uri not in annotated)
    return FuzzResult(files=len(inputs), annotated=sum(uri in annotated for uri in inputs), quarantined=kinds,
                      crashed=crashed, unaccounted=unaccounted, seconds=seconds)
