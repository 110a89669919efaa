"""`HFTracker`'s own SAM2 pre-processing checked against SAM2's, from the `sam2` package.

transformers' `Sam2VideoProcessor` needs torchvision, so `instvl.annotate.track.hf` resizes and
normalises frames and places prompts itself. The reference is the code of SAM2's video predictor, run
as it is: `init_state` (its JPEG frame loader, `load_video_frames`), `add_new_points_or_box` and
`add_new_mask`, bound to a stand-in without a model; the stand-in stops them where they would run it, so
what they have stored by then is SAM2's pre-processed input. Each comparison is also run on a
deliberately wrong input or output and must then report a mismatch.
"""

from pathlib import Path

import numpy as np
import pytest

from instvl.annotate.detect.base import IMAGENET_MEAN, IMAGENET_STD
from instvl.annotate.track import HFTracker
from instvl.annotate.track.sam2 import write_jpeg_folder
from instvl.annotate.tracks import TrackSeed
from instvl.deps import is_available
from instvl.testing.components import require_component
from instvl.testing.media import moving_square, noise_frames

torch = pytest.importorskip("torch")

IMAGE_SIZE = 64
# Both sides resize the same decoded uint8 pixels with the same filter (PIL bicubic) and normalise with
# the same mean and std; they differ only in float rounding (SAM2 divides by 255 in float64, we in
# float32), a few ulp. One grey level is 1 / (255 * 0.229) ~ 0.017 after normalisation, and swapping
# the filter for an antialiased bilinear one moves edge pixels by several grey levels, so 1e-5 is far
# below anything a real difference in pre-processing produces.
FRAME_ATOL = 1e-5
# Box corners: the same products in a different order (x / W * S against (x / W) * S), in float32.
POINT_ATOL = 1e-4


class _Stop(Exception):
    """Raised where SAM2's predictor would run its model: what it stored before is the pre-processing."""


@pytest.fixture(scope="module")
def tracker() -> HFTracker:
    return HFTracker.Config(tiny_random=True, tiny_image_size=IMAGE_SIZE).build()


@pytest.fixture(scope="module")
def sam2_reference():
    """SAM2VideoPredictor's input handling on a stand-in with the model's `image_size` and no model."""
    require_component("sam2", is_available("sam2"), "pip install 'instvl[sam2]'")
    from sam2.sam2_video_predictor import SAM2VideoPredictor as Predictor

    class Reference:
        image_size = IMAGE_SIZE
        device = torch.device("cpu")
        init_state = Predictor.init_state
        add_new_points_or_box = Predictor.add_new_points_or_box
        add_new_mask = Predictor.add_new_mask
        _obj_id_to_idx = Predictor._obj_id_to_idx

        def _get_image_feature(self, *args, **kwargs):
            return None  # init_state warms up the image encoder here

        def _run_single_frame_inference(self, **kwargs):
            raise _Stop

    return Reference()


def _video(width: int, height: int) -> np.ndarray:
    """A moving square (flat areas and sharp edges) and a noise frame (every pixel differs)."""
    frames, _ = moving_square(2, width, height)
    return np.concatenate([frames, np.stack(noise_frames(1, width, height))])


def _decoded(folder: Path) -> np.ndarray:
    """The JPEG frames decoded as SAM2's loader decodes them (PIL, RGB)."""
    from PIL import Image

    paths = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _ours(tracker: HFTracker, video: np.ndarray):
    session = tracker._new_session(video)
    frames = torch.stack([session.processed_frames[i] for i in range(len(video))])
    return frames, session


def _frames_match(ours, reference) -> bool:
    return ours.shape == reference.shape and bool(torch.allclose(ours, reference, rtol=0, atol=FRAME_ATOL))


def _mean_std():
    return torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _bilinear(video: np.ndarray):
    """The filter transformers' video processor uses (antialiased bilinear), with SAM2's normalisation."""
    import torch.nn.functional as functional

    mean, std = _mean_std()
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
    x = functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                               align_corners=False)
    return (x - mean) / std


FRAME_MISTAKES = {
    "moved": lambda tracker, video: _ours(tracker, np.ascontiguousarray(np.roll(video, 2, axis=2)))[0],
    "bgr": lambda tracker, video: _ours(tracker, np.ascontiguousarray(video[..., ::-1]))[0],
    "unnormalised": lambda tracker, video: _ours(tracker, video)[0] * _mean_std()[1] + _mean_std()[0],
    "bilinear": lambda tracker, video: _bilinear(video),
}


@pytest.mark.parametrize(("width", "height"), [(96, 64), (80, 48)])
@pytest.mark.parametrize("mistake", [None, *FRAME_MISTAKES])
def test_frames_are_resized_and_normalised_as_sam2_loads_them(tracker, sam2_reference, tmp_path, width,
                                                               height, mistake):
    """Same decoded pixels on both sides (one shared JPEG round trip): SAM2 reads the folder, we are
    given its decoded frames. (96, 64) shrinks both sides; (80, 48) shrinks one and enlarges the other."""
    write_jpeg_folder(_video(width, height), tmp_path)
    state = sam2_reference.init_state(str(tmp_path), offload_video_to_cpu=True)
    decoded = _decoded(tmp_path)
    ours, session = _ours(tracker, decoded)
    assert (session.video_height, session.video_width) == (state["video_height"], state["video_width"])
    assert (state["video_height"], state["video_width"]) == (height, width)
    assert ours.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and ours.dtype == torch.float32
    if mistake is None:
        assert _frames_match(ours, state["images"])
    else:
        assert not _frames_match(FRAME_MISTAKES[mistake](tracker, decoded), state["images"])


def _reference_box(sam2_reference, state, box_pixels):
    with pytest.raises(_Stop):
        sam2_reference.add_new_points_or_box(state, frame_idx=0, obj_id=5, box=box_pixels)
    points = state["point_inputs_per_obj"][state["obj_id_to_idx"][5]][0]
    return points["point_coords"].reshape(-1, 2), points["point_labels"].reshape(-1)


def _reference_mask(sam2_reference, state, mask):
    with pytest.raises(_Stop):
        sam2_reference.add_new_mask(state, frame_idx=0, obj_id=5, mask=mask)
    return state["mask_inputs_per_obj"][state["obj_id_to_idx"][5]][0]


@pytest.fixture
def reference_state(sam2_reference, tmp_path):
    """SAM2's inference state for a 96x64 clip (non-square, so swapped sides show)."""
    write_jpeg_folder(_video(96, 64), tmp_path)
    return sam2_reference.init_state(str(tmp_path), offload_video_to_cpu=True)


BOX_PIXELS = (20.0, 10.0, 70.0, 41.0)  # x0, y0, x1, y1 on the 96x64 frame
BOX_MISTAKES = {
    "moved": (21.5 / 96, 10 / 64, 71.5 / 96, 41 / 64),
    "swapped_width_height": (20 / 64, 10 / 96, 70 / 64, 41 / 96),
    "unnormalised": BOX_PIXELS,
}


@pytest.mark.parametrize("mistake", [None, *BOX_MISTAKES])
def test_box_prompt_is_placed_as_sam2_places_it(tracker, sam2_reference, reference_state, mistake):
    """The box SAM2 is given in video pixels, and ours normalised (as seeds carry it): the session must
    hold the same corner points with SAM2's box labels (2: top-left, 3: bottom-right)."""
    ref_coords, ref_labels = _reference_box(sam2_reference, reference_state, BOX_PIXELS)
    box = tuple(np.divide(BOX_PIXELS, [96, 64, 96, 64])) if mistake is None else BOX_MISTAKES[mistake]
    session = _ours(tracker, _video(96, 64))[1]
    tracker._add_prompts(session, [TrackSeed(5, box)], 64, 96)
    points = session.point_inputs_per_obj[session.obj_id_to_idx(5)][0]
    coords, labels = points["point_coords"].reshape(-1, 2), points["point_labels"].reshape(-1)
    assert labels.tolist() == ref_labels.tolist() == [2, 3]
    assert 0 not in session.mask_inputs_per_obj[session.obj_id_to_idx(5)]
    assert coords.shape == ref_coords.shape
    assert bool(torch.allclose(coords, ref_coords, rtol=0, atol=POINT_ATOL)) is (mistake is None)


def _ellipse(width: int, height: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """A (H, W) boolean ellipse: not a rectangle, so flips and transposes change it."""
    y, x = np.mgrid[:height, :width] + 0.5
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1


MASK = _ellipse(96, 64, (40, 25), (22, 14))
MASK_MISTAKES = {
    "moved": np.roll(MASK, 3, axis=1),
    "flipped": MASK[::-1].copy(),
    "dilated": MASK | np.roll(MASK, 2, axis=0) | np.roll(MASK, -2, axis=0),
}


@pytest.mark.parametrize("mistake", [None, *MASK_MISTAKES])
def test_mask_prompt_is_resized_as_sam2_resizes_it(tracker, sam2_reference, reference_state, mistake):
    """SAM2 resizes a frame-sized mask to the model's input (antialiased bilinear, kept where >= 0.5);
    the binary masks must be identical, and the mask replaces the box."""
    reference = _reference_mask(sam2_reference, reference_state, MASK)
    mask = MASK if mistake is None else MASK_MISTAKES[mistake]
    session = _ours(tracker, _video(96, 64))[1]
    tracker._add_prompts(session, [TrackSeed(5, (0.0, 0.0, 0.1, 0.1), mask=mask)], 64, 96)
    ours = session.mask_inputs_per_obj[session.obj_id_to_idx(5)][0]
    assert 0 not in session.point_inputs_per_obj[session.obj_id_to_idx(5)]
    assert ours.shape == reference.shape == (1, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert 0 < int(reference.sum()) < IMAGE_SIZE ** 2
    assert bool(torch.equal(ours, reference)) is (mistake is None)
