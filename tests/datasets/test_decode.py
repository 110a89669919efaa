"""Decoding: decord (in its worker) and PyAV agree, bytes equal files, crashes and hangs become reasons."""

import ctypes
import time

import numpy as np
import pytest

from instvl.datasets.decode import (
    DecodeError,
    DecodeWorker,
    decode_frames,
    load_image,
    pyav_frames,
    resize_short_side,
)
from instvl.deps import is_available

needs_decord = pytest.mark.skipif(not is_available("decord"), reason="decord is not installed")


def reference_frames(path) -> np.ndarray:
    """Every frame, decoded straight with PyAV (no seeking, no worker)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def worker():
    owned = DecodeWorker()
    yield owned
    owned.close()


@pytest.fixture
def long_video(make_video):
    """80 frames: far enough in for the PyAV seek path (starts seeking at frame 48)."""
    path, _ = make_video("long.mp4", num_frames=80, cut_at=50)
    return path


def test_pyav_indices_match_sequential_decode_including_after_seek(long_video):
    everything = reference_frames(long_video)
    indices = [70, 3, 55, 55, 79]
    frames = pyav_frames(str(long_video), "long", indices)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, everything[indices])


@needs_decord
def test_decord_and_pyav_give_the_same_frames(long_video):
    indices = [0, 10, 49, 50, 66, 79]
    from_decord, used = decode_frames(str(long_video), "long", indices, decoder="decord")
    from_pyav, _ = decode_frames(str(long_video), "long", indices, decoder="pyav")
    assert used == "decord"
    assert np.abs(from_decord.astype(int) - from_pyav.astype(int)).max() <= 2


@pytest.mark.parametrize("decoder", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_decoding_from_bytes_equals_decoding_from_file(long_video, decoder):
    indices = [1, 30, 60]
    from_file, _ = decode_frames(str(long_video), "long", indices, decoder=decoder)
    from_bytes, _ = decode_frames(long_video.read_bytes(), "long.mp4", indices, decoder=decoder)
    np.testing.assert_array_equal(from_file, from_bytes)


@needs_decord
def test_auto_falls_back_to_pyav_when_decord_cannot_read(make_video, tmp_path):
    import av

    source, _ = make_video(num_frames=12, fps=6)
    raw = tmp_path / "stream.h264"  # no container timing: decord refuses it, PyAV decodes it
    with av.open(str(source)) as src, av.open(str(raw), "w", format="h264") as dst:
        out = dst.add_stream("libx264", rate=6)
        out.width, out.height, out.pix_fmt = 64, 48, "yuv420p"
        for frame in src.decode(video=0):
            dst.mux(out.encode(frame.reformat(format="yuv420p")))
        dst.mux(out.encode())
    frames, used = decode_frames(str(raw), str(raw), [0, 5, 11], decoder="auto")
    assert used == "pyav" and frames.shape == (3, 48, 64, 3)
    with pytest.raises(DecodeError, match="stream.h264"):
        decode_frames(str(raw), str(raw), [0], decoder="decord")


def test_truncated_video_is_a_decode_error(long_video, tmp_path):
    import av

    faststart = tmp_path / "faststart.mp4"  # index first: half a file still opens, then runs dry
    with av.open(str(long_video)) as src, av.open(str(faststart), "w", options={"movflags": "+faststart"}) as dst:
        out = dst.add_stream("libx264", rate=8)
        out.width, out.height, out.pix_fmt = 64, 48, "yuv420p"
        for frame in src.decode(video=0):
            dst.mux(out.encode(frame.reformat(format="yuv420p")))
        dst.mux(out.encode())
    data = faststart.read_bytes()
    with pytest.raises(DecodeError, match="truncated") as caught:
        decode_frames(data[: len(data) // 2], "half.mp4", [0, 79], decoder="pyav")
    assert caught.value.uri == "half.mp4" and caught.value.stage == "decode"
    index_lost = long_video.read_bytes()[: len(long_video.read_bytes()) // 2]
    with pytest.raises(DecodeError, match="cannot open as a video"):
        decode_frames(index_lost, "index-lost.mp4", [0], decoder="pyav")


def test_frame_beyond_the_end_is_a_decode_error(make_video):
    path, _ = make_video(num_frames=10)
    with pytest.raises(DecodeError, match="frame 12 requested"):
        decode_frames(str(path), str(path), [2, 12], decoder="pyav")


def test_worker_turns_a_crash_into_a_reason_and_recovers(worker):
    with pytest.raises(DecodeError, match=r"decoder crashed \(signal 11, SIGSEGV\)"):
        worker.call(ctypes.string_at, 0, uri="crash.mp4")  # reads address 0: a real segfault in the child
    assert worker.call(sum, [1, 2, 3], uri="after-crash") == 6


def test_worker_kills_a_hung_call(worker):
    with pytest.raises(DecodeError, match="timed out after 0.5 s"):
        worker.call(time.sleep, 30, uri="hang.mp4", timeout_s=0.5)
    assert worker.call(max, [4, 9], uri="after-hang") == 9


def test_worker_reports_exceptions_without_dying(worker):
    with pytest.raises(DecodeError, match="ZeroDivisionError"):
        worker.call(divmod, 1, 0, uri="x")
    pid = worker._process.pid
    assert worker.call(divmod, 7, 2, uri="x") == (3, 1)
    assert worker._process.pid == pid


def test_resize_short_side_shrinks_only():
    frames = np.zeros((2, 100, 60, 3), np.uint8)
    assert resize_short_side(frames, 30).shape == (2, 50, 30, 3)
    assert resize_short_side(frames, 200) is frames
    assert resize_short_side(frames, None) is frames


def test_load_image_reports_garbage():
    with pytest.raises(DecodeError, match="broken.png"):
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
    frames, used = decode_frames(str(path), "narrow", indices, decoder="auto", max_short_side=40)
    assert used == "decord" and "retrying with PyAV" not in caplog.text
    expected = resize_short_side(reference_frames(path)[indices], 40)
    assert frames.shape == expected.shape and frames.shape[-1] == 3
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 2
