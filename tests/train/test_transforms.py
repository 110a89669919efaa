"""Per-sample transforms: normalised pixels, and one instance geometry whichever rendition a row stores."""

import numpy as np
import pytest

from instvl.media.clips import clip_media, stored_size
from instvl.media.ingest import IngestConfig, ingest
from instvl.testing.media import jpeg_bytes
from instvl.train.config import DataConfig
from instvl.train.transforms import MEANS_STDS, normalise, prepare_sample

pytest.importorskip("torch")

BOX = [0.25, 0.3, 0.5, 0.7]
RED = (220, 30, 30)


def test_normalise_is_channels_first_and_per_channel():
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[..., 0], frames[1, ..., 1], frames[0, 2, 3, 2] = 255, 51, 102
    out = normalise(frames, "clip").numpy()
    mean, std = (np.asarray(v) for v in MEANS_STDS["clip"])
    assert out.shape == (3, 2, 3, 4) and out.dtype == np.float32
    expected = (frames.transpose(3, 0, 1, 2) / 255.0 - mean[:, None, None, None]) / std[:, None, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def _photo_rows(tmp_path) -> tuple[dict, dict]:
    """The same picture as a 160x120 source row and as the 80x60 rendition a build stores."""
    pixels = np.full((120, 160, 3), 90, np.uint8)
    pixels[36:84, 40:80] = RED  # BOX in pixels
    source = tmp_path / "photo.jpg"
    source.write_bytes(jpeg_bytes(pixels))
    cfg = IngestConfig(store_image_short_side=60)
    (spec,), _ = ingest(source, cfg)
    stored, _ = clip_media(spec, cfg, str(source))
    assert stored_size(spec, cfg) == (80, 60)
    instance = {"instance_id": 0, "phrase": "box", "caption": "a red box.",
                "trajectory": {"frame_index": [0], "box": [BOX], "score": [1.0], "mask_rle": []}}
    row = {"sample_id": "p", "media_type": "image", "num_frames": 1, "global_caption": "a red box on grey.",
           "instances": [instance]}
    return {**row, "media": source.read_bytes()}, {**row, "media": stored}


@pytest.mark.parametrize("quality", ["exact", "fast"])
def test_an_image_instance_lands_on_its_object_in_the_source_and_in_the_stored_rendition(tmp_path, quality):
    cfg = DataConfig(img_size=32, crop_size=16, decode_quality=quality, normalize="imagenet", crop_pad=0.0)
    mean, std = (np.asarray(v)[:, None, None, None] for v in MEANS_STDS["imagenet"])
    prepared = [prepare_sample(row, cfg, 0, train=False) for row in _photo_rows(tmp_path)]
    for sample in prepared:
        (inst,) = sample["instances"]
        crop = (inst["crop"].numpy() * std + mean) * 255  # (3, 1, 16, 16)
        assert np.abs(crop[:, 0, 2:-2, 2:-2].mean(axis=(1, 2)) - RED).max() < 25  # the crop is the red box
        assert inst["present"].tolist() == [True]
    for sample in prepared:  # the box, in model-input coordinates, is where the red is in the model input
        frame = (sample["video"].numpy()[:, 0] * std[:, 0] + mean[:, 0]) * 255  # (3, 32, 32)
        ys, xs = np.nonzero(np.abs(frame.transpose(1, 2, 0) - RED).sum(axis=-1) < 90)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 32
        np.testing.assert_allclose(sample["instances"][0]["boxes"].numpy()[0], found, atol=1.5 / 32)
    np.testing.assert_allclose(prepared[0]["instances"][0]["boxes"], prepared[1]["instances"][0]["boxes"])
