"""Decoding: decord and PyAV agree, bytes equal files, missing frames raise, repeat or drop, and photos
decode upright."""

import numpy as np
import pytest

from instvl.deps import is_available
from instvl.media.decode import decode_frames, exif_orientation, load_image, media_of, resize_short_side
from instvl.media.fetch import MediaError
from instvl.testing.media import exif_rotated_jpeg, png_bytes, raw_h264

needs_decord = pytest.mark.skipif(not is_available("decord"), reason="decord is not installed")


def reference_frames(path) -> np.ndarray:
    """Every frame, decoded straight with PyAV (no seeking, no worker)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def long_video(make_video):
    """80 frames: far enough in for the PyAV seek path (starts seeking at frame 48)."""
    path, _ = make_video("long.mp4", num_frames=80, cut_at=50)
    return path


def test_pyav_indices_match_sequential_decode_including_after_seek(long_video):
    everything = reference_frames(long_video)
    indices = [70, 3, 55, 55, 79]
    decoded = decode_frames(str(long_video), "long", indices, decoder="pyav")
    frames = decoded.frames
    assert decoded.indices.tolist() == indices and decoded.decoder == "pyav"
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, everything[indices])


@needs_decord
def test_decord_and_pyav_give_the_same_frames(long_video):
    indices = [0, 10, 49, 50, 66, 79]
    from_decord = decode_frames(str(long_video), "long", indices, decoder="decord")
    from_pyav = decode_frames(str(long_video), "long", indices, decoder="pyav")
    assert from_decord.decoder == "decord"
    assert np.abs(from_decord.frames.astype(int) - from_pyav.frames.astype(int)).max() <= 2


@pytest.mark.parametrize("decoder", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_decoding_from_bytes_equals_decoding_from_file(long_video, decoder):
    indices = [1, 30, 60]
    from_file = decode_frames(str(long_video), "long", indices, decoder=decoder)
    from_bytes = decode_frames(long_video.read_bytes(), "long.mp4", indices, decoder=decoder)
    np.testing.assert_array_equal(from_file.frames, from_bytes.frames)


@needs_decord
def test_auto_falls_back_to_pyav_when_decord_cannot_read(make_video, tmp_path):

    source, _ = make_video(num_frames=12, fps=6)
    raw = raw_h264(source, tmp_path / "stream.h264", 6, 64, 48)  # no container timing: decord refuses it
    decoded = decode_frames(str(raw), str(raw), [0, 5, 11], decoder="auto")
    assert decoded.decoder == "pyav" and decoded.frames.shape == (3, 48, 64, 3)
    with pytest.raises(MediaError, match="stream.h264"):
        decode_frames(str(raw), str(raw), [0], decoder="decord")


def remux(source, path, **options) -> bytes:
    """The frames of `source` re-encoded into an MP4 at `path` (PyAV's defaults put the index last)."""
    import av

    with av.open(str(source)) as src, av.open(str(path), "w", **options) as dst:
        out = dst.add_stream("libx264", rate=8)
        out.width, out.height, out.pix_fmt = 64, 48, "yuv420p"
        for frame in src.decode(video=0):
            dst.mux(out.encode(frame.reformat(format="yuv420p")))
        dst.mux(out.encode())
    return path.read_bytes()


def test_truncated_video_is_a_decode_error(long_video, tmp_path):
    # index first: half a file still opens, then runs dry
    data = remux(long_video, tmp_path / "faststart.mp4", options={"movflags": "+faststart"})
    with pytest.raises(MediaError, match="truncated") as caught:
        decode_frames(data[: len(data) // 2], "half.mp4", [0, 79], decoder="pyav")
    assert caught.value.uri == "half.mp4" and caught.value.stage == "decode"
    index_last = remux(long_video, tmp_path / "index-last.mp4")
    with pytest.raises(MediaError, match="cannot open as a video"):
        decode_frames(index_last[: len(index_last) // 2], "index-lost.mp4", [0], decoder="pyav")


def test_frame_beyond_the_end_is_a_decode_error(make_video):
    path, _ = make_video(num_frames=10)
    with pytest.raises(MediaError, match="frame 12 requested"):
        decode_frames(str(path), str(path), [2, 12], decoder="pyav")


@pytest.mark.parametrize("decoder", [pytest.param("auto", marks=needs_decord), "pyav"])
def test_missing_frames_raise_repeat_the_nearest_earlier_frame_or_drop(make_video, decoder):
    path, _ = make_video(num_frames=10)
    everything = reference_frames(path)
    wanted = [2, 12, 11, 5]
    with pytest.raises(MediaError, match="frame 12 requested"):
        decode_frames(str(path), "short", wanted, decoder=decoder)
    repeated = decode_frames(str(path), "short", wanted, decoder=decoder, on_missing="repeat")
    assert repeated.indices.tolist() == wanted
    np.testing.assert_allclose(repeated.frames, everything[[2, 5, 5, 5]], atol=2)  # 5: last one decoded
    dropped = decode_frames(str(path), "short", wanted, decoder=decoder, on_missing="drop")
    assert dropped.indices.tolist() == [2, 5]
    np.testing.assert_allclose(dropped.frames, everything[[2, 5]], atol=2)


def test_a_stream_that_breaks_off_keeps_its_frames_unless_asked_to_raise(long_video, tmp_path):
    data = remux(long_video, tmp_path / "faststart.mp4", options={"movflags": "+faststart"})
    cut = data[: len(data) * 3 // 4]  # the index is first: the frames before the cut still decode
    with pytest.raises(MediaError, match="truncated: "):  # frames no wanted one needs are never decoded
        decode_frames(cut, "cut.mp4", [1, 79], decoder="pyav")
    repeated = decode_frames(cut, "cut.mp4", [1, 79], decoder="pyav", on_missing="repeat")
    np.testing.assert_array_equal(repeated.frames[1], repeated.frames[0])
    assert decode_frames(cut, "cut.mp4", [1, 79], decoder="pyav", on_missing="drop").indices.tolist() == [1]
    with pytest.raises(MediaError, match="cannot open as a video"):
        decode_frames(b"\x00" * 64, "zeros.mp4", [0], decoder="pyav", on_missing="repeat")


def asymmetric_picture(width: int = 48, height: int = 32) -> np.ndarray:
    picture = np.full((height, width, 3), 60, np.uint8)
    picture[:8, :16] = (230, 30, 30)  # top left only
    return picture


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_decodes_upright_as_frame_zero(orientation):
    upright = asymmetric_picture()
    data = exif_rotated_jpeg(upright, orientation)
    assert exif_orientation(data, "photo.jpg") == orientation
    for pixels in (load_image(data, "photo.jpg"), decode_frames(data, "photo.jpg", [0]).frames[0]):
        assert pixels.shape == upright.shape
        assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3
    decoded = decode_frames(data, "photo.jpg", [0, 0], decoder="pyav")
    assert decoded.decoder == "pillow" and decoded.frames.shape == (2, 32, 48, 3)
    with pytest.raises(MediaError, match="an image has only frame 0"):
        decode_frames(data, "photo.jpg", [0, 3])
    assert decode_frames(data, "photo.jpg", [3, 0], on_missing="repeat").frames.shape == (2, 32, 48, 3)
    assert exif_orientation(png_bytes(upright), "plain.png") == 1


def test_media_of_a_row(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x")
    assert media_of({"media": b"bytes", "source": {"uri": str(path)}}) == b"bytes"
    assert media_of({"media": None, "source": {"uri": f"file://{path}"}}) == str(path)
    assert media_of({"media": None, "source": {"uri": str(tmp_path / "gone.mp4")}}) is None
    assert media_of({"media": None, "source": {"uri": "s3://bucket/clip.mp4"}}) is None


def test_resize_short_side_shrinks_only():
    frames = np.zeros((2, 100, 60, 3), np.uint8)
    assert resize_short_side(frames, 30).shape == (2, 50, 30, 3)
    assert resize_short_side(frames, 200) is frames
    assert resize_short_side(frames, None) is frames


def test_load_image_reports_garbage():
    with pytest.raises(MediaError, match="broken.png"):
        load_image(b"definitely not an image", "broken.png")


def textured_video(path, width: int, height: int, num_frames: int = 4):
    """Blocky random texture, so a misaligned row would change pixels (flat frames would hide it)."""
    import av

    rng = np.random.default_rng(width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            blocks = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
            picture = np.ascontiguousarray(blocks.repeat(4, 0).repeat(4, 1))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


@needs_decord
@pytest.mark.parametrize("width", [72, 48, 16, 40])
def test_decord_reads_widths_whose_padded_rows_look_like_extra_channels(tmp_path, width, caplog):
    """InstVL-Synth draws frame sizes such as 72x90: decord returned (H, W, 4) frames and get_batch failed
    ("DECORDArrayCopyFromTo ... 25920 vs. 19440"), so every such clip fell back to PyAV with a warning."""
    path = textured_video(tmp_path / f"w{width}.mp4", width, 92)
    indices = [0, 2, 3]
    decoded = decode_frames(str(path), "narrow", indices, decoder="auto", max_short_side=40)
    frames = decoded.frames
    assert decoded.decoder == "decord" and "retrying with PyAV" not in caplog.text
    expected = resize_short_side(reference_frames(path)[indices], 40)
    assert frames.shape == expected.shape and frames.shape[-1] == 3
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 2


def panning_video(path, num_frames: int = 120, width: int = 96, height: int = 64, block: int = 4):
    """A noisy pan encoded with B-frames (some of them references) and one keyframe: sparse sampling
    needs the reference chain from frame 0, and most B-frames are nobody's reference. `block`: the
    size of the random texture's squares (larger: smoother, closer to a photo)."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (height // block + 1, (width + num_frames) // block + 1, 3), dtype=np.uint8)
    canvas = canvas.repeat(block, 0).repeat(block, 1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), block / 4) if block > 4 else canvas
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": "keyint=250:bframes=3:b-pyramid=normal"}
        for t in range(num_frames):
            noise = rng.integers(-8, 9, (height, width, 1))
            picture = np.clip(canvas[:height, t:t + width].astype(int) + noise, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("indices", [[5, 13, 22, 37, 51, 66, 82, 97, 110, 119], [61, 62, 90]])  # 2nd: seeks
def test_sparse_pyav_decoding_skips_unwanted_frames_and_gives_the_exact_frames(tmp_path, indices):
    from instvl.media.decode import iter_pyav_frames

    path = panning_video(tmp_path / "pan.mp4")
    everything = reference_frames(path)
    decoded = decode_frames(str(path), "pan", indices, decoder="pyav")
    np.testing.assert_array_equal(decoded.frames, everything[indices])
    wanted = set(indices)
    seen = [i for i, _ in iter_pyav_frames(str(path), "pan", min(wanted), max(wanted) + 1, wanted=wanted)]
    assert wanted <= set(seen) and len(seen) < max(wanted) + 1 - min(wanted)  # some frames were skipped
    assert seen == sorted(seen)
    np.testing.assert_array_equal(decode_frames(str(path), "pan", [0, 1, 2, 3], decoder="pyav").frames,
                                  everything[:4])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return 99.0 if error == 0 else 10 * np.log10(255**2 / error)


def test_fast_and_draft_qualities_stay_close_to_the_exact_decode(tmp_path):
    """fast: only the resampling filter differs (FFmpeg's area filter aliases pixel noise more than OpenCV's,
    about 28 dB here, 43 dB on the loader bench's 720p clips); draft also skips deblocking."""
    path = panning_video(tmp_path / "pan.mp4", width=192, height=128, block=16)
    indices = [5, 40, 77, 119]
    exact = decode_frames(str(path), "pan", indices, decoder="pyav", max_short_side=32)
    for quality, floor in (("fast", 25.0), ("draft", 20.0)):
        decoded = decode_frames(str(path), "pan", indices, decoder="pyav", max_short_side=32, quality=quality)
        assert decoded.frames.shape == exact.frames.shape == (4, 32, 48, 3)
        assert min(psnr(a, b) for a, b in zip(decoded.frames, exact.frames, strict=True)) > floor
    full = decode_frames(str(path), "pan", indices, decoder="pyav", quality="draft")
    assert not np.array_equal(full.frames, reference_frames(path)[indices])  # the filter was skipped


@pytest.mark.parametrize("orientation", [3, 6])
def test_draft_jpeg_decoding_keeps_orientation_and_short_side(orientation):
    rng = np.random.default_rng(1)
    upright = np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 16, 0), 16, 1)
    data = exif_rotated_jpeg(upright, orientation)  # 640 x 480 when upright
    full = load_image(data, "photo.jpg")
    drafted = load_image(data, "photo.jpg", draft_short_side=100)
    assert full.shape == (480, 640, 3) and drafted.shape == (120, 160, 3)  # 1/4: short side >= 100
    assert load_image(data, "photo.jpg", draft_short_side=300).shape == full.shape  # not 1/2 or less
    exact = decode_frames(data, "photo.jpg", [0], max_short_side=100).frames[0]
    fast = decode_frames(data, "photo.jpg", [0], max_short_side=100, quality="fast").frames[0]
    assert exact.shape == fast.shape == (100, 133, 3) and psnr(exact, fast) > 30
