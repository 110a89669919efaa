"""Renders of a sample: one GIF frame per video frame, boxes in the instance colours on the right frames
(faded between annotated frames), caption bands, a decodable MP4, and renders linked from the report."""

import numpy as np
import pytest
from PIL import Image, ImageSequence

from instvl.datasets.inspect import InspectConfig
from instvl.datasets.inspect import main as inspect_main
from instvl.datasets.records import Instance, Trajectory
from instvl.datasets.render import (
    BAND_COLOUR,
    RenderConfig,
    RenderError,
    display_size,
    find_row,
    held_boxes,
    main,
    render_frames,
    render_sample,
)
from instvl.geometry import instance_colour, to_pixels
from instvl.media.encode import encode_mp4

GREY = 90
BOX = [0.2, 0.25, 0.7, 0.8]
SPARSE = [0, 4]
"""Instance 0 is annotated on frames 0 and 4 only; instance 1 on every frame."""


@pytest.fixture
def sparse_sample(sample_factory):
    """8 flat grey frames (so every coloured pixel comes from the render) and two instances."""
    sample = sample_factory(0, num_instances=2, num_frames=8, width=64, height=48, with_media=True)
    sample.media = encode_mp4(np.full((8, 48, 64, 3), GREY, np.uint8), fps=8.0)
    sample.instances[0].trajectory = Trajectory(frame_index=SPARSE, box=[BOX, BOX], score=[0.9, 0.9])
    sample.global_caption = "a grey scene where a red square waits and a green one slides along the bottom"
    return sample


@pytest.fixture
def sparse_root(make_dataset, sparse_sample, sample_factory):
    others = [sample_factory(i, num_instances=1, with_media=True) for i in (1, 2)]
    return make_dataset(samples=[sparse_sample, *others])


def read_gif(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def left_edge_pixel(layout, box) -> tuple[int, int]:
    """(y, x) on the canvas of the middle of a box's left edge (clear of the label tag above the box)."""
    x = to_pixels(box, layout.width, layout.picture_height)[0]
    y = round((box[1] + box[3]) / 2 * (layout.picture_height - 1))
    return layout.header_height + y, x


def test_gif_has_one_frame_per_video_frame_with_boxes_on_the_annotated_ones(sparse_root, tmp_path):
    row = find_row(sparse_root, "s-00000")
    path = render_sample(row, tmp_path / "s.gif", max_side=256)
    frames = read_gif(path)
    _, layout = render_frames(row, max_side=256)
    assert len(frames) == row["num_frames"] == 8
    assert frames[0].shape == (layout.height, layout.width, 3) and layout.width == 256
    y, x = left_edge_pixel(layout, BOX)
    red = np.array(instance_colour(0).rgb)
    solid, faded, gone = (frames[i][y, x].astype(int) for i in (0, 2, 6))
    assert np.array_equal(solid, red)  # the palette keeps instance colours exact
    assert np.array_equal(frames[4][y, x], red)
    assert np.abs(faded - red).max() > 40 and np.abs(faded - GREY).max() > 20  # held box, faded
    assert np.abs(gone - GREY).max() <= 12  # after the last annotated frame: no box
    assert np.abs(frames[6][y, x + 6].astype(int) - GREY).max() <= 12


def test_caption_bands_carry_text_in_the_instance_colours(sparse_root):
    row = find_row(sparse_root, "s-00000")
    frames, layout = render_frames(row, max_side=256)
    canvas = np.asarray(frames[3]).astype(int)
    header = canvas[: layout.header_height]
    footer = canvas[layout.header_height + layout.picture_height:]
    assert len(layout.header) >= 3  # the long global caption wraps, plus the frame counter line
    assert len(layout.footer) >= 2 and footer.shape[0] == layout.footer_height
    assert (np.abs(header - BAND_COLOUR).max(axis=2) > 60).sum() > 200
    for instance_id in (0, 1):
        close = np.abs(footer - instance_colour(instance_id).rgb).max(axis=2) <= 30
        assert close.sum() > 30, f"no caption text in the colour of instance {instance_id}"


def test_every_frame_differs_by_its_counter(sparse_root):
    """GIF writers merge identical consecutive frames; the counter keeps the frame count exact."""
    frames, layout = render_frames(find_row(sparse_root, "s-00000"), max_side=128)
    counters = [np.asarray(f)[layout.header_height - layout.line_height:layout.header_height] for f in frames]
    assert all(not np.array_equal(a, b) for a, b in zip(counters, counters[1:], strict=False))


def test_mp4_render_decodes(sparse_root, tmp_path):
    import av

    output = tmp_path / "render.mp4"
    cfg = RenderConfig(root=str(sparse_root), sample_id="s-00000", output=str(output), max_side=200)
    assert main(cfg) == 0
    with av.open(str(output)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(decoded) == 8
    assert decoded[0].shape[1] == 192  # 64 px grown x3 to fit 200


def test_main_defaults_to_a_gif_under_root_renders(sparse_root, capsys):
    assert main(RenderConfig(root=str(sparse_root), sample_id="s-00001")) == 0
    path = sparse_root / "renders" / "s-00001.gif"
    assert path.is_file() and str(path) in capsys.readouterr().out
    assert len(read_gif(path)) == 8


def test_unknown_sample_and_missing_media_are_named(sparse_root, make_dataset, sample_factory, capsys):
    assert main(RenderConfig(root=str(sparse_root), sample_id="nope")) == 1
    err = capsys.readouterr().err
    assert "'nope'" in err and str(sparse_root) in err
    no_media = find_row(make_dataset(samples=[sample_factory(7)]), "s-00007")
    with pytest.raises(RenderError, match="s-00007: media not embedded"):
        render_sample(no_media, "unused.gif")


def test_image_sample_renders_one_frame(make_dataset, sample_factory, tmp_path):
    root = make_dataset(samples=[sample_factory(3, media_type="image", with_media=True)])
    path = render_sample(find_row(root, "s-00003"), tmp_path / "image.gif")
    assert len(read_gif(path)) == 1


def test_inspect_renders_and_links_the_first_samples(sparse_root, tmp_path):
    report = tmp_path / "site" / "report.html"
    cfg = InspectConfig(root=str(sparse_root), html=str(report), num_samples=3, frames_per_sample=1,
                        renders=2)
    assert inspect_main(cfg) == 0
    renders = sorted(p.name for p in (report.parent / "renders").iterdir())
    assert renders == ["s-00000.gif", "s-00001.gif"]
    page = report.read_text()
    assert 'href="renders/s-00000.gif"' in page and 'href="renders/s-00001.gif"' in page
    assert 'href="renders/s-00002.gif"' not in page


def test_display_size_shrinks_large_and_grows_small_pictures_by_whole_factors():
    assert display_size(1920, 1080, 480) == (480, 270)
    assert display_size(64, 48, 480) == (448, 336)  # x7: sharp, no fractional resampling
    assert display_size(300, 200, 480) == (300, 200)


def test_held_boxes_only_between_annotated_frames():
    inst = Instance(3, "cup", "a cup", Trajectory([2, 6], [[0, 0, 1, 1], BOX])).to_row()
    assert held_boxes([inst], 1) == [] and held_boxes([inst], 2) == [] and held_boxes([inst], 7) == []
    (held,) = held_boxes([inst], 5)
    assert held["trajectory"] == {"frame_index": [5], "box": [[0, 0, 1, 1]], "mask_rle": [], "score": []}
