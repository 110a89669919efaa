"""Clip-level media: frame sampling for annotation and the MP4/image bytes embedded in shard rows."""

import io

import numpy as np
import pytest

from instvl.media.clips import DecodedClip, clip_media, decode_clip, sample_frames, sample_indices
from instvl.media.encode import VideoEncodingConfig
from instvl.media.ingest import Failure, IngestConfig, ingest

PYAV = IngestConfig(decoder="pyav", max_clip_s=None, shots={"enabled": False})


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
    small, _ = clip_media(bmp_spec, PYAV.model_copy(update={"max_short_side": 16}), str(bmp_path))
    from PIL import Image

    assert Image.open(io.BytesIO(small)).size == (21, 16)


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
