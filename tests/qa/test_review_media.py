"""Review media (`qa/review_media.py`): a clip stored at a small rendition is reviewed at `review_height` from
its source, frame for frame and with the stored clip's timing; a source that cannot be used gives way to the
stored media with a warning; `review_media: stored` reviews the stored media scaled up, as before."""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from instvl.datasets.records import Sample
from instvl.media.clips import clip_media, stored_size
from instvl.media.decode import iter_pyav_frames, load_image
from instvl.media.fetch import fetch_media
from instvl.media.ingest import IngestConfig, ingest
from instvl.qa.review_media import SourceFiles, review_media, review_path, shown_size
from instvl.testing.datasets import make_sample, rows_by_id, write_dataset
from instvl.testing.media import jpeg_bytes, moving_square, write_mp4

FPS, FRAMES, WIDTH, HEIGHT = 8.0, 48, 256, 192
NTSC = 30000 / 1001


def store_config(fps: float) -> IngestConfig:
    """Clips of 24 frames stored at a short side of 32: far below the review height of the tests (96)."""
    return IngestConfig(min_clip_s=0.5, max_clip_s=24 / fps, shots={"enabled": False}, store_short_side=32,
                        store_image_short_side=32)

REVIEW_HEIGHT = 96
CHECKER = slice(HEIGHT // 2, HEIGHT)
"""The lower half of every source frame is a checkerboard of 4-pixel squares: detail a 32-pixel rendition
loses and a 96-pixel one keeps."""


BITS = 6
"""Source frame t carries t in binary in the top stripe: bit b is a black or white block b/8 of the width
across, which no codec or rescaling turns into another number."""


def frame_numbers(frames: np.ndarray) -> list[int]:
    """The source frame numbers written in `frames` (any size)."""
    height, width = frames.shape[1:3]
    row = frames[:, height // 16, :, :].mean(axis=-1)  # the middle of the stripe
    bits = [row[:, int((b + 0.5) * width / 8)] > 128 for b in range(BITS)]
    return [sum(int(bits[b][t]) << b for b in range(BITS)) for t in range(len(frames))]


def source_frames() -> np.ndarray:
    frames, _ = moving_square(FRAMES, WIDTH, HEIGHT)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    checker = (((yy // 4) + (xx // 4)) % 2 * 255).astype(np.uint8)[..., None]
    for t in range(FRAMES):
        frames[t, :HEIGHT // 8] = 128
        for b in range(BITS):
            frames[t, :HEIGHT // 8, b * WIDTH // 8:(b + 1) * WIDTH // 8] = 255 * (t >> b & 1)
        frames[t, CHECKER] = checker[CHECKER]
    return frames


@pytest.fixture(params=[FPS, NTSC], ids=["8fps", "ntsc"])
def stored_clip(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Sample]:
    """A source video and the row of its second clip (frames [24, 48)) as annotation writes it: the
    stored rendition at short side 32, width and height its size, the source's uri, sha256 and span
    (at 8 fps, and at 29.97 fps, which the row keeps as a float32)."""
    uri = write_mp4(tmp_path / "sources" / "walk.mp4", source_frames(), request.param)
    store = store_config(request.param)
    specs, failures = ingest([str(uri)], store)
    assert not failures and [(s.start_frame, s.end_frame) for s in specs] == [(0, 24), (24, 48)]
    spec = specs[1]
    data, fmt = clip_media(spec, store, fetch_media(spec.uri))
    width, height = stored_size(spec, store)
    fields = {**spec.sample_fields(), "width": width, "height": height, "media": data, "media_format": fmt}
    row = dataclasses.replace(make_sample(0, num_frames=spec.num_frames), **fields)
    return write_dataset(tmp_path / "ds", [row]), row


def frames_of(data: bytes) -> tuple[np.ndarray, list[float]]:
    """Every frame of an MP4 and its presentation time (s)."""
    pairs = [(f.to_ndarray(format="rgb24"), float(f.time)) for _, f in iter_pyav_frames(data, "review.mp4")]
    return np.stack([p for p, _ in pairs]), [t for _, t in pairs]


def make(root: Path, origin: str, review_height: int | None = REVIEW_HEIGHT):
    row = next(iter(rows_by_id(root).values()))
    return review_media(root, row, origin, review_height, SourceFiles())  # type: ignore[arg-type]


def checker_contrast(frames: np.ndarray) -> float:
    """The spread of the checkerboard half: about 127 where it is resolved, near 0 where blurred to grey."""
    lower = frames[:, frames.shape[1] // 2 + 4:, :, 0].astype(np.float64)
    return float(lower.std())


def test_a_small_stored_clip_is_reviewed_from_its_source_frame_for_frame(stored_clip, caplog):
    root, sample = stored_clip
    caplog.set_level(logging.WARNING)
    path, origin = make(root, "source")
    assert origin == "source" and path == review_path(root, sample.to_row(), "source", REVIEW_HEIGHT)
    review, review_times = frames_of(path.read_bytes())
    stored, stored_times = frames_of(sample.media)
    assert stored.shape[1:3] == (32, 42)  # the training rendition
    assert review.shape[1:3] == (REVIEW_HEIGHT, 128)  # the source shrunk to the review height, not 42x32
    assert len(review) == len(stored) == sample.num_frames == 24
    assert review_times == pytest.approx(stored_times)  # same rate, same start: clip frame i at the same time
    # clip frame i of both files is source frame 24 + i (what trajectories' frame_index counts)
    assert frame_numbers(review) == frame_numbers(stored) == list(range(24, 48))
    assert checker_contrast(review) > 60 > 10 > checker_contrast(stored)  # the detail the models saw
    assert not caplog.records


def test_an_image_is_reviewed_from_its_upright_source(tmp_path):
    frame = source_frames()[0]
    source = tmp_path / "photo.jpg"
    source.write_bytes(jpeg_bytes(frame))
    image = make_sample(1, media_type="image", with_media=True, width=32, height=24)
    row = dataclasses.replace(image, uri=str(source), sha256=None)
    root = write_dataset(tmp_path / "ds", [row])
    path, origin = make(root, "source")
    assert origin == "source" and path.suffix == ".jpg"
    assert load_image(str(path), "review.jpg").shape == (REVIEW_HEIGHT, 128, 3)  # short side at most 96


@pytest.mark.parametrize("problem", ["missing", "changed", "truncated"])
def test_an_unusable_source_falls_back_to_the_stored_clip_with_a_warning(stored_clip, problem, caplog):
    root, sample = stored_clip
    uri = Path(sample.uri or "")
    if problem == "missing":
        uri.unlink()
    elif problem == "changed":  # other bytes: its frames may not be the ones the trajectories count
        write_mp4(uri, source_frames()[::-1], sample.fps or 0)
    else:  # the same file cut short: the clip's last frames are gone (sha256 not checked)
        write_mp4(uri, source_frames()[:40], sample.fps or 0)
        root = write_dataset(root.parent / "unchecked", [dataclasses.replace(sample, sha256=None)])
    caplog.set_level(logging.WARNING)
    path, origin = make(root, "source")
    assert origin == "stored" and path == review_path(root, sample.to_row(), "stored", REVIEW_HEIGHT)
    review, _ = frames_of(path.read_bytes())
    assert review.shape[:3] == (24, REVIEW_HEIGHT, 126)  # the 42x32 stored clip scaled up
    assert checker_contrast(review) < 10
    [warning] = caplog.records
    assert sample.sample_id in warning.getMessage() and "stored rendition" in warning.getMessage()
    expected = {"missing": "missing file", "changed": "sha256", "truncated": "only 16 of 24 frames"}
    assert expected[problem] in warning.getMessage()


def test_a_source_that_cannot_be_fetched_is_tried_once_per_push(tmp_path, caplog):
    samples = [make_sample(i, with_media=True) for i in range(3)]  # file:///data/clip-<i>.mp4: absent
    samples = [dataclasses.replace(s, uri="nosuchproto://host/clip.mp4") for s in samples]
    root = write_dataset(tmp_path / "ds", samples)
    sources = SourceFiles()
    caplog.set_level(logging.WARNING)
    made = [review_media(root, row, "source", None, sources) for row in rows_by_id(root).values()]
    assert [origin for _, origin in made] == ["stored"] * 3  # type: ignore[misc]
    assert len(caplog.records) == 3 and all("cannot fetch" in r.getMessage() for r in caplog.records)
    assert [p.name for p, _ in made] == [f"s-0000{i}.mp4" for i in range(3)]  # type: ignore[misc]


def test_stored_keeps_reviewing_the_embedded_clip_scaled_up(stored_clip, caplog):
    root, sample = stored_clip
    caplog.set_level(logging.WARNING)
    path, origin = make(root, "stored")
    assert origin == "stored" and path.name == f"{sample.sample_id}.mp4"  # today's file name
    review, _ = frames_of(path.read_bytes())
    assert review.shape[:3] == (24, REVIEW_HEIGHT, 126) and checker_contrast(review) < 10
    assert not caplog.records  # the source is never opened
    unscaled = write_dataset(root.parent / "as-is", [sample])
    path, _ = make(unscaled, "stored", review_height=None)
    assert path.read_bytes() == sample.media  # no review height: the embedded bytes as they are


def test_a_video_is_shown_at_least_at_the_review_height():
    assert shown_size(42, 32, 96) == (126, 96)
    assert shown_size(320, 569, 480) == (320, 569)  # tall enough: as it is
    assert shown_size(43, 32, None) == (43, 32)
