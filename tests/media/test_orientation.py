"""A phone photo (JPEG stored turned, with an EXIF orientation) is upright for every reader of its row.

`instvl annotate run` (fake preset) turns one EXIF-rotated JPEG into a row twice: with the media
embedded, and with the row pointing at the original file. The planned clip, the frames the models see,
the row's width/height, the embedded bytes read by a decoder that ignores EXIF, the training loader
(frames, crops and boxes), the report thumbnail, the render decode and `validate --check-media` must all
agree with the upright picture. Each of them fails when any step of the path forgets the EXIF transpose.
"""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.run import main as annotate_main
from instvl.config import load_config
from instvl.datasets.reader import read_table
from instvl.datasets.render import sample_frames as render_frames
from instvl.datasets.report import build_card
from instvl.datasets.validate import check_media_size
from instvl.media.clips import sample_frames
from instvl.media.decode import exif_orientation
from instvl.media.ingest import IngestConfig, ingest
from instvl.testing.media import exif_rotated_jpeg, png_bytes
from instvl.train.config import DataConfig
from instvl.train.transforms import load_frames, prepare_sample

WIDTH, HEIGHT = 96, 64  # landscape when upright; orientation 6 stores it as a 64 x 96 portrait


def upright_picture() -> np.ndarray:
    """A non-square picture with no symmetry: a red block top left, a blue bar bottom right, a ramp."""
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[..., 1] = np.linspace(40, 200, WIDTH, dtype=np.uint8)[None, :]
    picture[8:32, 8:40] = (220, 30, 30)
    picture[48:56, 56:88] = (30, 30, 220)
    return picture


def assert_upright(pixels: np.ndarray, truth: np.ndarray, what: str) -> None:
    assert pixels.shape == truth.shape, f"{what}: {pixels.shape[1]}x{pixels.shape[0]}, not upright"
    difference = np.abs(pixels.astype(int) - truth.astype(int)).mean()
    assert difference < 4, f"{what}: mean difference {difference:.1f} from the upright picture"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("phone")
    truth = upright_picture()
    (folder / "photo.jpg").write_bytes(exif_rotated_jpeg(truth, orientation=6))
    return folder, truth


@pytest.fixture(scope="module", params=[True, False], ids=["embedded", "source-file"])
def row(request, photo, tmp_path_factory) -> dict:
    """The row `annotate run` writes for the photo, with its media embedded or pointing at the file."""
    folder, _ = photo
    output = tmp_path_factory.mktemp("annotated") / "corpus"
    cfg = load_config(AnnotateConfig, "annotate/fake", values={
        "input": str(folder), "output": str(output), "out.embed_media": request.param})
    assert annotate_main(cfg) == 0
    (row,) = read_table(output).to_pylist()
    assert row["media_type"] == "image" and (row["media"] is not None) == request.param
    assert row["instances"]  # boxes to compare
    return row


def test_the_stored_photo_is_really_turned(photo):
    folder, truth = photo
    with Image.open(folder / "photo.jpg") as stored:
        assert stored.size == (HEIGHT, WIDTH)
    assert exif_orientation(str(folder / "photo.jpg"), "photo.jpg") == 6


def test_ingest_and_annotation_frames_are_upright(photo):
    folder, truth = photo
    (spec,), failures = ingest(folder, IngestConfig())
    assert failures == [] and (spec.width, spec.height) == (WIDTH, HEIGHT)
    assert_upright(sample_frames(spec, str(folder / "photo.jpg")).frames[0], truth, "annotation frame")


def test_the_row_has_the_upright_size(row):
    assert (row["width"], row["height"]) == (WIDTH, HEIGHT)
    assert check_media_size(row) is None  # validate --check-media decodes it at that size


def test_embedded_bytes_are_upright_without_exif(row, photo):
    if row["media"] is None:
        pytest.skip("media not embedded")
    with Image.open(io.BytesIO(row["media"])) as embedded:  # a reader that ignores EXIF orientation
        assert embedded.getexif().get(0x0112, 1) == 1
        assert_upright(np.asarray(embedded.convert("RGB")), photo[1], "embedded bytes")


def test_training_loader_sees_the_upright_photo(row, photo):
    truth = photo[1]
    frames, indices = load_frames(row, 2, None)
    assert indices.tolist() == [0]  # an image is a 1-frame clip
    assert_upright(frames[0], truth, "training frame")
    cfg = DataConfig(num_frames=2, img_size=32, crop_size=16)
    reference = {**row, "media": png_bytes(truth)}  # the same row over the true upright pixels
    got, expected = prepare_sample(row, cfg, 0, False), prepare_sample(reference, cfg, 0, False)
    assert got["video"].shape == expected["video"].shape
    assert (got["video"] - expected["video"]).abs().mean() < 0.1
    assert len(got["instances"]) == len(expected["instances"])
    for mine, theirs in zip(got["instances"], expected["instances"], strict=True):
        assert (mine["boxes"] == theirs["boxes"]).all() and (mine["present"] == theirs["present"]).all()
        assert (mine["crop"] - theirs["crop"]).abs().mean() < 0.1


def test_report_thumbnail_and_render_are_upright(row, photo):
    truth = photo[1]
    card = build_card(row, frames_per_sample=1, thumb_width=WIDTH, render_dir=None)
    assert card.note is None and len(card.thumbnails) == 1
    data = base64.b64decode(card.thumbnails[0][1].split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumbnail:
        assert thumbnail.size == (WIDTH, HEIGHT)
    ((index, frame),) = render_frames(row)
    assert index == 0
    assert_upright(frame, truth, "render frame")
