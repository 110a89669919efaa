"""Statistics of a known small dataset, the printed tables and the HTML report."""

import re

import pytest

from instvl.datasets.inspect import InspectConfig, compute_stats, format_stats, main
from instvl.datasets.report import build_cards, frames_to_show


@pytest.fixture
def known_root(make_dataset, sample_factory):
    samples = [sample_factory(0, num_instances=2, with_media=True),
               sample_factory(1, num_instances=3, split="val", with_media=True),
               sample_factory(2, num_instances=0, with_media=True),
               sample_factory(3, media_type="image", num_instances=1, with_media=True)]
    return make_dataset(units=2, samples=samples, quarantine=1)


@pytest.fixture
def media_root(make_dataset, sample_factory):
    samples = [sample_factory(0, num_instances=2, with_media=True), sample_factory(1, num_instances=1),
               sample_factory(2, media_type="image", num_instances=2, with_media=True)]
    return make_dataset(samples=samples)


def test_counts_of_a_known_dataset(known_root):
    stats = compute_stats(known_root)
    assert (stats.samples, stats.videos, stats.images, stats.instances) == (4, 3, 1, 6)
    assert stats.quarantined == 2 and stats.quarantine_reasons == {"zero-length file": 2}
    assert stats.instances_histogram == {0: 1, 1: 1, 2: 1, 3: 1}
    per_sample = stats.instances_per_sample
    assert (per_sample.minimum, per_sample.mean, per_sample.maximum) == (0, 1.5, 3)
    frames = stats.trajectory_frames
    assert (frames.count, frames.minimum, frames.maximum) == (6, 1, 8)
    assert frames.mean == pytest.approx(41 / 6)
    # "scene 0 with 2 moving shapes"
    assert (stats.global_caption_words.minimum, stats.global_caption_words.maximum) == (6, 6)
    assert stats.instance_caption_words.mean == 7
    assert stats.phrases == {"red square": 3, "blue circle": 2, "green triangle": 1}
    assert stats.qc_status == {"auto": 4} and stats.splits == {"train": 3, "val": 1}
    assert [s.rows for s in stats.shards] == [2, 2] and all(s.bytes > 0 for s in stats.shards)


def test_printed_tables_are_aligned(known_root):
    text = format_stats(compute_stats(known_root), top_phrases=2)
    assert re.search(r"^samples\s+4$", text, re.M)
    assert re.search(r"^instances per sample\s+4\s+0\s+1\.5\s+3$", text, re.M)
    assert "Top 2 phrases" in text and "green triangle" not in text
    assert re.search(r"^zero-length file\s+2$", text, re.M)
    shard_lines = [line for line in text.splitlines() if line.startswith("shards/")]
    assert len(shard_lines) == 2 and len({len(line) for line in shard_lines}) == 1


def test_main_writes_html_report(known_root, capsys):
    assert main(InspectConfig(root=str(known_root), num_samples=3, frames_per_sample=2)) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "samples" in out
    page = (known_root / "report.html").read_text()
    assert f"<title>InstVL dataset: {known_root.name}</title>" in page
    assert page.count('<article class="card"') == 3
    assert "scene 1 with 3 moving shapes" in page
    assert "ID: 2 green triangle" in page and "the green triangle number 2 slides right" in page
    assert page.count("data:image/jpeg;base64,") == 2 + 2 + 2  # sample 2 has no boxes: frames over the clip
    assert "zero-length file" in page


def test_cards_thumbnails_and_notes(media_root, tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    (renders / "s-00002.gif").write_bytes(b"GIF89a")
    cards = build_cards(media_root, count=5, frames_per_sample=3, thumb_width=120, render_dir=renders)
    assert [c.sample_id for c in cards] == ["s-00000", "s-00001", "s-00002"]
    video, bare, image = cards
    assert [i for i, _ in video.thumbnails] == [0, 4, 7]
    assert bare.thumbnails == [] and "not embedded" in bare.note
    assert [i for i, _ in image.thumbnails] == [0]
    assert image.render_href == "renders/s-00002.gif" and video.render_href is None
    assert [colour for *_rest, colour in video.instances] == ["#e6194b", "#3cb44b"]


def test_frames_to_show_prefers_boxed_frames(sample_factory):
    row = sample_factory(0, num_frames=20).to_row()
    row["instances"][0]["trajectory"]["frame_index"] = [5, 6, 7]
    row["instances"][1]["trajectory"]["frame_index"] = [10]
    assert frames_to_show(row, 3) == [5, 7, 10]
    assert frames_to_show({"num_frames": 6, "instances": []}, 2) == [0, 5]


def test_not_a_dataset(tmp_path, capsys):
    assert main(InspectConfig(root=str(tmp_path / "nothing"))) == 1
    assert "not an InstVL dataset root" in capsys.readouterr().err


def test_random_weights_banner_and_models_head_the_reports(make_dataset, sample_factory, tmp_path):
    samples = [sample_factory(i, num_instances=1, with_media=True) for i in range(2)]
    for sample in samples:
        sample.models = {"detector": "hf:tiny-random", "random_init": "true",
                         "detector.weights": "random-init"}
    root = make_dataset(samples=samples)
    stats = compute_stats(root)
    assert stats.random_rows == 2
    text = format_stats(stats)
    assert text.startswith("!!! RANDOM WEIGHTS — not a real corpus: 2 of 2 rows")
    assert "detector.weights: random-init" in text
    report = tmp_path / "report.html"
    assert main(InspectConfig(root=str(root), html=str(report), renders=0)) == 0
    page = report.read_text()
    header = page[page.index("<header>"):page.index("</header>")]
    assert '<div class="banner" role="alert">RANDOM WEIGHTS — not a real corpus' in header
    assert "<li>detector: hf:tiny-random</li>" in header


def test_no_banner_for_real_weights(known_root, tmp_path):
    stats = compute_stats(known_root)
    assert stats.random_rows == 0 and "RANDOM WEIGHTS" not in format_stats(stats)
    report = tmp_path / "report.html"
    assert main(InspectConfig(root=str(known_root), html=str(report), renders=0)) == 0
    assert 'class="banner"' not in report.read_text()
