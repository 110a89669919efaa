"""Clip-level media: frame sampling for annotation and the MP4/image bytes embedded in shard rows."""

import io

import numpy as np
import pytest

from instvl.datasets.records import FrameSpace, Instance, Sample, Trajectory, decode_rle, encode_rle
from instvl.geometry import to_pixels
from instvl.media.clips import (
    DecodedClip,
    clip_media,
    decode_clip,
    sample_frames,
    sample_indices,
    stored_size,
)
from instvl.media.decode import decode_frames
from instvl.media.encode import VideoEncodingConfig
from instvl.media.ingest import Failure, IngestConfig, ingest

PYAV = IngestConfig(decoder="pyav", max_clip_s=None, shots={"enabled": False}, store_short_side=None,
                    store_image_short_side=None)


def decode_all(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def video_specs(make_video):
    """Factory: ingest one generated video and return (path, clip specs)."""

    def make(cfg: IngestConfig = PYAV, **video):
        path, _ = make_video(**video)
        specs, failures = ingest(path, cfg)
        assert failures == []
        return path, specs

    return make


@pytest.fixture
def image_spec(tmp_path):
    def make(name: str = "photo.png", fmt: str = "PNG", width: int = 40, height: int = 30):
        from PIL import Image

        pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), np.uint8)
        Image.fromarray(pixels).save(tmp_path / name, format=fmt)
        specs, _ = ingest(tmp_path / name, PYAV)
        return tmp_path / name, specs[0], pixels

    return make


def test_sample_indices():
    assert sample_indices(10, 20).tolist() == list(range(10, 20))
    assert sample_indices(10, 20, stride=3).tolist() == [10, 13, 16, 19]
    assert sample_indices(0, 100, num=5).tolist() == [0, 25, 50, 74, 99]
    assert sample_indices(0, 100, num=3, stride=10).tolist() == [0, 40, 90]  # 4.5 rounds to even
    assert sample_indices(0, 4, num=16).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="empty frame span"):
        sample_indices(5, 5)


def test_sample_frames_of_a_clip_in_the_middle(video_specs):
    cfg = IngestConfig(decoder="pyav", max_clip_s=2.0)
    path, specs = video_specs(cfg, num_frames=48, fps=8, width=96, height=64)
    spec = specs[1]
    clip = sample_frames(spec, str(path), num=4, max_short_side=32, decoder="pyav")
    assert isinstance(clip, DecodedClip) and clip.decoder == "pyav"
    assert clip.source_frames[0] == spec.start_frame and clip.source_frames[-1] == spec.end_frame - 1
    assert clip.clip_frames[0] == 0
    assert clip.frames.shape == (4, 32, 48, 3) and clip.frames.dtype == np.uint8


def test_image_sample_is_one_frame_of_its_pixels(image_spec):
    path, spec, pixels = image_spec()
    clip = sample_frames(spec, str(path))
    assert clip.source_frames.tolist() == [0]
    np.testing.assert_array_equal(clip.frames[0], pixels)


def test_decode_clip_uses_config_and_returns_failure_for_damaged_file(video_specs):
    path, specs = video_specs(num_frames=24, fps=8)
    clip = decode_clip(specs[0], PYAV.model_copy(update={"num_frames": None, "sample_fps": 4.0}), str(path))
    assert clip.source_frames.tolist() == list(range(0, 24, 2))
    path.write_bytes(b"\x00" * 100)  # the file changed after ingest
    failure = decode_clip(specs[0], PYAV, str(path))
    assert isinstance(failure, Failure) and failure.stage == "decode" and failure.uri == str(path)


def test_clip_media_is_a_faststart_mp4_of_exactly_the_span(video_specs):
    cfg = IngestConfig(decoder="pyav", max_clip_s=2.0)
    path, specs = video_specs(cfg, num_frames=40, fps=8)
    spec = specs[1]
    data, fmt = clip_media(spec, cfg, str(path))
    assert fmt == "mp4" and data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
    frames = decode_all(data)
    source = sample_frames(spec, str(path), num=None, decoder="pyav").frames
    assert frames.shape == source.shape == (spec.num_frames, 48, 64, 3)
    assert np.abs(frames.astype(int) - source.astype(int)).mean() < 6  # one extra lossy generation


def test_clip_media_encodes_with_the_output_settings(video_specs):
    import av

    cfg = IngestConfig(decoder="pyav", max_clip_s=None)
    path, specs = video_specs(cfg, num_frames=40, fps=8)
    data, _ = clip_media(specs[0], cfg, str(path), video=VideoEncodingConfig(keyint=4, crf=30))
    with av.open(io.BytesIO(data)) as container:
        keyframes = [i for i, p in enumerate(p for p in container.demux(video=0) if p.size) if p.is_keyframe]
    assert keyframes[0] == 0 and max(np.diff([*keyframes, 40])) <= 4
    assert decode_all(data).shape == (40, 48, 64, 3)


def test_image_media_keeps_png_bytes_and_reencodes_bmp(image_spec):
    path, spec, _ = image_spec("photo.png", "PNG")
    assert clip_media(spec, PYAV, str(path)) == (path.read_bytes(), "png")
    bmp_path, bmp_spec, pixels = image_spec("photo.bmp", "BMP")
    data, fmt = clip_media(bmp_spec, PYAV, str(bmp_path))
    assert fmt == "jpeg" and data[:3] == b"\xff\xd8\xff"
    small, _ = clip_media(bmp_spec, PYAV.model_copy(update={"store_image_short_side": 16}), str(bmp_path))
    from PIL import Image

    assert Image.open(io.BytesIO(small)).size == (21, 16)
    annotated_small = PYAV.model_copy(update={"max_short_side": 16, "store_image_short_side": 40})
    assert clip_media(spec, annotated_small, str(path)) == (path.read_bytes(), "png")  # stored as it is


def test_decode_clip_with_track_fps_adds_dense_frames_and_marks_the_sampled_ones(video_specs):
    path, specs = video_specs(num_frames=24, fps=8)
    cfg = PYAV.model_copy(update={"num_frames": 5})
    sampled = decode_clip(specs[0], cfg, str(path))
    dense = decode_clip(specs[0], cfg, str(path), track_fps=4.0)  # every 2nd frame, plus the sampled ones
    assert isinstance(sampled, DecodedClip) and isinstance(dense, DecodedClip)
    assert sampled.stored is None and sampled.source_frames.tolist() == [0, 6, 12, 17, 23]
    assert dense.source_frames.tolist() == sorted(set(range(0, 24, 2)) | {17, 23})
    assert dense.source_frames[dense.store].tolist() == sampled.source_frames.tolist()
    np.testing.assert_array_equal(dense.sampled_frames, sampled.frames)
    assert dense.sampled_clip_frames.tolist() == sampled.clip_frames.tolist()
    assert decode_clip(specs[0], cfg, str(path), track_fps=0.3).stored is None  # frame 0 only: nothing new


def test_stored_rendition_follows_store_short_side_not_the_annotation_frames(video_specs):
    cfg = PYAV.model_copy(update={"max_short_side": 48, "store_short_side": 33})
    path, specs = video_specs(cfg, num_frames=12, width=96, height=64)
    decoded = decode_clip(specs[0], cfg, str(path))
    assert isinstance(decoded, DecodedClip) and decoded.frames.shape[1:] == (48, 72, 3)  # what models see
    data, _ = clip_media(specs[0], cfg, str(path))
    assert stored_size(specs[0], cfg) == (50, 32)  # 49.5 x 33 rounded, then even for H.264
    assert decode_all(data).shape == (12, 32, 50, 3)


def test_stored_image_rendition_is_upright_and_the_size_stored_size_says(tmp_path):
    from instvl.testing.media import exif_rotated_jpeg

    upright = np.zeros((300, 400, 3), np.uint8)
    upright[:, :100] = 255  # a white band on the left of the upright picture
    (tmp_path / "turned.jpg").write_bytes(exif_rotated_jpeg(upright, orientation=6))
    cfg = PYAV.model_copy(update={"store_image_short_side": 90, "store_short_side": 16})
    (spec,), _ = ingest(tmp_path / "turned.jpg", cfg)
    data, fmt = clip_media(spec, cfg, str(tmp_path / "turned.jpg"))
    stored = decode_frames(data, "stored.jpg", [0]).frames[0]
    assert fmt == "jpeg" and stored_size(spec, cfg) == (120, 90) == (stored.shape[1], stored.shape[0])
    assert stored[:, :25].mean() > 200 and stored[:, 35:].mean() < 50


def _find_square(frame: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The pixels of `frame` within a small distance of `colour` (the moving square)."""
    return np.abs(frame.astype(int) - colour.astype(int)).sum(axis=-1) < 60


def test_boxes_and_masks_found_on_annotation_frames_land_on_the_object_in_the_stored_clip(tmp_path):
    """Annotate on 96-px frames, store at 40 px: the row's box and mask, drawn on the stored clip at the
    row's width x height, cover the square there."""
    from instvl.testing.media import moving_square, write_mp4

    frames, _ = moving_square(24, 160, 96, side=32, seed=4)
    colour = frames[0, 48, 16]  # the square's colour: its first frame's centre
    path = write_mp4(tmp_path / "square.mp4", frames, fps=8, crf=18)
    cfg = PYAV.model_copy(update={"max_short_side": 96, "store_short_side": 40, "num_frames": 6})
    (spec,), _ = ingest(path, cfg)
    decoded = decode_clip(spec, cfg, str(path))
    assert isinstance(decoded, DecodedClip) and decoded.frames.shape[1:3] == (96, 160)
    boxes, masks = [], []
    for frame in decoded.frames:  # a "detector and tracker" on the annotation frames
        found = _find_square(frame, colour)
        ys, xs = np.nonzero(found)
        boxes.append([xs.min() / 160, ys.min() / 96, (xs.max() + 1) / 160, (ys.max() + 1) / 96])
        masks.append(encode_rle(found))
    width, height = stored_size(spec, cfg)
    sample = Sample(sample_id="s", media_type="video", width=width, height=height, num_frames=24,
                    global_caption="a square", instances=[Instance(0, "square", "a square", Trajectory(
                        decoded.clip_frames.tolist(), boxes, mask_rle=masks, space=FrameSpace.CLIP))])
    sample.fit_masks(decoded.frames.shape[1:3])
    data, _ = clip_media(spec, cfg, str(path))
    stored = decode_frames(data, "stored.mp4", decoded.clip_frames.tolist()).frames
    assert stored.shape[1:3] == (height, width) == (40, 66)
    trajectory = sample.instances[0].trajectory
    for frame, box, counts in zip(stored, trajectory.box, trajectory.mask_rle, strict=True):
        x0, y0, x1, y1 = to_pixels(box, width, height)
        inside = _find_square(frame[y0 + 1:y1 - 1, x0 + 1:x1 - 1], colour)
        assert inside.mean() > 0.95  # the box's interior is the square
        mask = decode_rle(counts, height, width)
        assert _find_square(frame, colour)[mask].mean() > 0.9  # the mask's pixels are the square's
        assert abs(mask.sum() / (32 * 66 / 160 * 32 * 40 / 96) - 1) < 0.15  # and it has the square's area
