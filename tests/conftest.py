"""Shared fixtures: offline environment and factories for small media files."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep Hugging Face caches out of the user's home."""
    cache = tmp_path_factory.getbasetemp() / "hf-home"
    monkeypatch.setenv("HF_HOME", str(cache))


def moving_box_frames(num_frames: int, width: int, height: int, cut_at: int | None = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 of a coloured square moving left to right over a plain background.

    Returns the frames and the square's ground-truth boxes (T, 4), xyxy normalised to [0, 1]. With
    `cut_at`, the background and colours change abruptly at that frame (a hard shot cut).
    """
    rng = np.random.default_rng(seed)
    side = max(4, min(width, height) // 4)
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


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 MP4 with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: write a small MP4 of a moving square; returns (path, ground-truth boxes)."""

    def make(name: str = "clip.mp4", num_frames: int = 16, width: int = 64, height: int = 48,
             fps: int = 8, cut_at: int | None = None, seed: int = 0) -> tuple[Path, np.ndarray]:
        frames, boxes = moving_box_frames(num_frames, width, height, cut_at, seed)
        return write_mp4(tmp_path / name, frames, fps), boxes

    return make
