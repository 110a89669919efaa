"""Synthetic media with known content for tests: moving-shape clips with their true boxes, and their bytes.

Frames are RGB uint8, (T, H, W, 3) arrays for clips and lists of (H, W, 3) arrays where a backend takes
a list. Boxes are normalised xyxy, NaN where an object is absent. MP4, PNG and JPEG bytes come from the
production encoders (`instvl.media.encode`), so tests read back exactly what the pipeline writes.
"""

import io
from pathlib import Path

import numpy as np

GREY = (128, 128, 128)
CROSSING_COLOURS = {"red square": (220, 40, 40), "blue square": (40, 60, 220), "green square": (40, 200, 60),
                    "yellow square": (230, 220, 40)}

# What a viewer applies to the stored pixels for each EXIF orientation (PIL's exif_transpose); each is
# its own inverse except the two quarter turns, so storing needs the opposite turn for 6 and 8.
_STORE_FOR_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                          6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}


def moving_square(num_frames: int = 16, width: int = 64, height: int = 48, *, side: int | None = None,
                  cut_at: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) of a coloured square moving left to right over a plain background.

    Returns the frames and the square's true boxes (T, 4) on whole pixels. Colours come from `seed`;
    with `cut_at`, background and colour change abruptly at that frame (a hard shot cut).
    """
    rng = np.random.default_rng(seed)
    side = side or max(4, min(width, height) // 4)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    boxes = np.zeros((num_frames, 4), np.float32)
    palettes = [(rng.integers(0, 256, 3), rng.integers(0, 256, 3)) for _ in range(2)]
    for t in range(num_frames):
        background, colour = palettes[int(cut_at is not None and t >= cut_at)]
        frames[t] = background
        x0 = int((width - side) * t / max(1, num_frames - 1))
        y0 = (height - side) // 2
        frames[t, y0:y0 + side, x0:x0 + side] = colour
        boxes[t] = (x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height)
    return frames, boxes


def paint_boxes(boxes: np.ndarray, width: int, height: int, colours: list[tuple[int, int, int]],
                background: int = 90) -> np.ndarray:
    """Frames (T, H, W, 3) with object n filled in `colours[n]` at its box `boxes[t, n]` ((T, N, 4), NaN:
    absent); later objects are drawn over earlier ones."""
    boxes = np.asarray(boxes, dtype=np.float64)
    frames = np.full((boxes.shape[0], height, width, 3), background, np.uint8)
    for t, frame_boxes in enumerate(boxes):
        for colour, box in zip(colours, frame_boxes, strict=False):
            if not np.isnan(box).any():
                x0, y0, x1, y1 = box
                frames[t, int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)] = colour
    return frames


def crossing_scene(num_frames: int = 24, width: int = 96, height: int = 64,
                   flash: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A red square moving right passes behind a blue square moving left; a green one drifts down.

    With `flash=(first, last)`, a yellow square is visible only on those frames. Returns frames
    (T, H, W, 3), true boxes (T, N, 4) with NaN where an object is less than half visible, and the N
    phrases. Every frame differs from every other, so a frame's pixels identify it.
    """
    side = 12
    phrases = ["red square", "blue square", "green square"] + (["yellow square"] if flash else [])
    frames = np.full((num_frames, height, width, 3), 90, np.uint8)
    boxes = np.full((num_frames, len(phrases), 4), np.nan, np.float32)
    for t in range(num_frames):
        s = t / max(1, num_frames - 1)
        positions = [(4 + s * (width - side - 8), 26), (width - side - 4 - s * (width - side - 8), 24),
                     (70, 2 + s * 8)]
        if flash:
            positions.append((20, 46))
        owner = np.full((height, width), -1)
        for n, (x, y) in enumerate(positions):  # later objects are drawn on top of earlier ones
            if n == 3 and flash is not None and not flash[0] <= t <= flash[1]:
                continue
            x0, y0 = int(round(x)), int(round(y))
            frames[t, y0:y0 + side, x0:x0 + side] = CROSSING_COLOURS[phrases[n]]
            owner[y0:y0 + side, x0:x0 + side] = n
            boxes[t, n] = (x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height)
        for n in range(len(phrases)):
            if (owner == n).sum() < side * side / 2:
                boxes[t, n] = np.nan
    return frames, boxes, phrases


def noise_frames(count: int = 2, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """`count` frames of seeded uniform noise, all different."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def solid_frames(count: int = 4, width: int = 64, height: int = 48,
                 colour: tuple[int, int, int] = GREY) -> list[np.ndarray]:
    """`count` frames of one flat colour (a known background to draw on)."""
    return [np.full((height, width, 3), colour, np.uint8) for _ in range(count)]


def mp4_bytes(frames: np.ndarray, fps: float = 8.0, crf: int = 23) -> bytes:
    """(T, H, W, 3) frames as H.264 MP4 bytes, through the production encoder."""
    from instvl.media.encode import encode_mp4

    return encode_mp4(frames, fps, crf=crf)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 23) -> Path:
    """Write (T, H, W, 3) frames as an H.264 MP4 file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mp4_bytes(frames, fps, crf))
    return path


def raw_h264(source: str | Path, dest: str | Path, fps: int, width: int, height: int) -> Path:
    """The video at `source` re-encoded at width x height as a raw H.264 elementary stream (no container,
    no timestamps): what decoders and probes meet in `.h264` files."""
    import av

    with av.open(str(source)) as src, av.open(str(dest), "w", format="h264") as dst:
        out = dst.add_stream("libx264", rate=fps)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        for frame in src.decode(video=0):
            dst.mux(out.encode(frame.reformat(format="yuv420p")))
        dst.mux(out.encode())
    return Path(dest)


def png_bytes(frame: np.ndarray) -> bytes:
    """An (H, W, 3) frame as PNG bytes (lossless), through the production encoder."""
    from instvl.media.encode import encode_image

    return encode_image(np.asarray(frame, np.uint8), "png")


def jpeg_bytes(frame: np.ndarray, quality: int = 95) -> bytes:
    """An (H, W, 3) frame as JPEG bytes, through the production encoder."""
    from instvl.media.encode import encode_image

    return encode_image(np.asarray(frame, np.uint8), "jpeg", quality)


def exif_rotated_jpeg(upright: np.ndarray, orientation: int = 6, quality: int = 95) -> bytes:
    """A JPEG as a phone writes it: pixels stored turned, with the EXIF orientation that shows them `upright`.

    A reader that applies EXIF orientation sees `upright` ((H, W, 3)); one that ignores it sees the
    stored pixels (for orientations 5-8, W x H instead of H x W).
    """
    from PIL import Image

    if orientation not in _STORE_FOR_ORIENTATION:
        raise ValueError(f"EXIF orientation must be 2..8 (1 is already upright), got {orientation}")
    image = Image.fromarray(upright).transpose(getattr(Image.Transpose, _STORE_FOR_ORIENTATION[orientation]))
    exif = Image.Exif()
    exif[0x0112] = orientation  # the Orientation tag
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


def huge_png(width: int = 20000, height: int = 10000) -> bytes:
    """A valid 1-bit PNG of width x height (200 Mpx by default) in a few kB: Pillow calls it a bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(-(-width // 8))
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
