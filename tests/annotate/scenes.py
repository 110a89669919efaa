"""Small synthetic scenes with known identities for the annotation tests."""

import numpy as np

COLOURS = {"red square": (220, 40, 40), "blue square": (40, 60, 220), "green square": (40, 200, 60),
           "yellow square": (230, 220, 40)}


def crossing_scene(num_frames: int = 24, width: int = 96, height: int = 64,
                   flash: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A red square moving right passes behind a blue square moving left; a green one drifts down.

    With `flash=(first, last)`, a yellow square is visible only on those frames. Returns frames
    (T, H, W, 3) uint8, ground-truth boxes (T, N, 4) normalised xyxy with NaN where an object is less
    than half visible, and the N phrases.
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
            if n == 3 and not flash[0] <= t <= flash[1]:
                continue
            x0, y0 = int(round(x)), int(round(y))
            frames[t, y0:y0 + side, x0:x0 + side] = COLOURS[phrases[n]]
            owner[y0:y0 + side, x0:x0 + side] = n
            boxes[t, n] = (x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height)
        for n in range(len(phrases)):
            if (owner == n).sum() < side * side / 2:
                boxes[t, n] = np.nan
    return frames, boxes, phrases
