"""Ingest: listing, clip planning, stable sample ids, fsspec inputs, corrupt files turned into Failures."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from instvl.config import ConfigError, load_config
from instvl.media.ingest import IngestConfig, ingest, list_sources, make_sample_id, plan_windows

NO_SPLIT = IngestConfig(max_clip_s=None)


@pytest.fixture
def write_png(tmp_path):
    def write(path: Path, width: int = 32, height: int = 24, seed: int = 0) -> Path:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)).save(path)
        return path

    return write


@pytest.fixture
def corrupt_file(make_video, write_png, tmp_path):
    """Factory: a bad file of a given kind, and the reason expected for it."""

    def make(kind: str) -> tuple[Path, str]:
        good, _ = make_video(f"good-{kind}.mp4", num_frames=16)
        data, bad = good.read_bytes(), tmp_path / f"{kind}.mp4"
        if kind == "truncated":
            bad.write_bytes(data[: len(data) // 2])
        elif kind == "random":
            bad.write_bytes(np.random.default_rng(1).bytes(4096))
        elif kind == "zero":
            bad.write_bytes(b"")
        elif kind == "png":
            bad.write_bytes(write_png(tmp_path / "pic.png").read_bytes())
        good.unlink()
        (tmp_path / "pic.png").unlink(missing_ok=True)
        reasons = {"truncated": "truncated: ", "random": "not a video: unrecognised data",
                   "zero": "zero-length file", "png": "not a video: the file holds a PNG image",
                   "missing": "missing file"}
        return bad, reasons[kind]

    return make


def test_listing_is_recursive_sorted_and_skips_hidden(tmp_path, make_video, write_png):
    make_video("b.mp4")
    write_png(tmp_path / "sub" / "a.png")
    write_png(tmp_path / "sub" / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not media")
    uris, failures = list_sources(tmp_path, IngestConfig())
    assert uris == sorted(uris) == [str(tmp_path / "b.mp4"), str(tmp_path / "sub" / "a.png")]
    assert failures == []


def test_listing_globs_single_files_and_reports_missing_inputs(tmp_path, make_video, write_png):
    make_video("one.mp4")
    make_video("two.mov")
    write_png(tmp_path / "x.png")
    (tmp_path / "notes.txt").write_text("not media")
    inputs = [str(tmp_path / "*.mp4"), f"file://{tmp_path / 'x.png'}", tmp_path / "two.mov",
              tmp_path / "gone.mp4", tmp_path / "notes.txt", str(tmp_path / "*.webm")]
    uris, failures = list_sources(inputs, IngestConfig())
    assert [Path(u).name for u in uris] == ["one.mp4", "two.mov", "x.png"]
    reasons = {Path(f.uri).name: f.reason for f in failures}
    assert reasons == {"gone.mp4": "missing file: no such file or directory",
                       "notes.txt": "unsupported file type '.txt'",
                       "*.webm": "no media files matched the pattern"}


def test_sample_ids_are_stable_and_depend_on_content_and_span(tmp_path, make_video):
    path, _ = make_video("a.mp4", num_frames=40, cut_at=20)
    first, _ = ingest(path, NO_SPLIT)
    second, _ = ingest(path, NO_SPLIT)
    assert [s.sample_id for s in first] == [s.sample_id for s in second]
    assert len({s.sample_id for s in first}) == len(first) == 2
    renamed = tmp_path / "renamed.mp4"
    shutil.copy(path, renamed)
    moved, _ = ingest(renamed, NO_SPLIT)
    assert [s.sample_id for s in moved] == [s.sample_id for s in first]
    assert make_sample_id("abc", 0, 10) != make_sample_id("abc", 0, 11) != make_sample_id("abd", 0, 10)


def test_video_clips_follow_shots_and_length_limits(make_video):
    path, _ = make_video("a.mp4", num_frames=64, fps=8, cut_at=24)
    specs, failures = ingest(path, IngestConfig(min_clip_s=1.0, max_clip_s=2.5))
    assert failures == []
    spans = [(s.start_frame, s.end_frame, s.shot_index) for s in specs]
    assert spans == [(0, 12, 0), (12, 24, 0), (24, 44, 1), (44, 64, 1)]  # 20-frame cap, equal halves
    assert all(s.num_frames <= 20 for s in specs)
    assert specs[2].start_s == pytest.approx(3.0) and specs[2].fps == pytest.approx(8.0)
    assert specs[0].sample_fields()["num_frames"] == 12


def test_plan_windows_drops_short_shots_and_balances_long_ones():
    cfg = IngestConfig(min_clip_s=1.0, max_clip_s=2.0)
    assert plan_windows(0, 7, 8.0, cfg) == []
    assert plan_windows(10, 18, 8.0, cfg) == [(10, 18)]
    assert plan_windows(0, 33, 8.0, cfg) == [(0, 11), (11, 22), (22, 33)]


def test_shot_splitting_can_be_turned_off(make_video):
    path, _ = make_video(num_frames=40, cut_at=20)
    specs, _ = ingest(path, load_config(IngestConfig, None, ["shots.enabled=false", "max_clip_s=null"]))
    assert [(s.start_frame, s.end_frame) for s in specs] == [(0, 40)]


def test_too_short_video_and_duplicates_are_failures(tmp_path, make_video):
    short, _ = make_video("short.mp4", num_frames=4, fps=8)
    long, _ = make_video("long.mp4", num_frames=16, fps=8)
    shutil.copy(long, tmp_path / "long-copy.mp4")
    specs, failures = ingest(tmp_path, IngestConfig())
    assert {s.uri for s in specs} == {str(tmp_path / "long-copy.mp4")}  # first in listing order wins
    reasons = {Path(f.uri).name: (f.stage, f.reason) for f in failures}
    assert reasons["short.mp4"][0] == "clips"
    assert reasons["short.mp4"][1].startswith("too short: longest shot is 0.50 s")
    assert reasons["long.mp4"] == ("dedupe", f"duplicate: same bytes as {tmp_path / 'long-copy.mp4'}")


@pytest.mark.parametrize("kind", ["truncated", "random", "zero", "png", "missing"])
def test_each_corrupt_kind_is_a_failure_with_reason(kind, corrupt_file, tmp_path):
    bad, reason = corrupt_file(kind) if kind != "missing" else (tmp_path / "missing.mp4", "missing file")
    specs, failures = ingest(bad, IngestConfig())
    assert specs == []
    assert len(failures) == 1 and failures[0].uri == str(bad)
    assert failures[0].reason.startswith(reason)
    assert str(bad) in str(failures[0])


def test_good_files_come_through_next_to_bad_ones(tmp_path, make_video, write_png, corrupt_file):
    bad = [corrupt_file(kind)[0] for kind in ("truncated", "random", "zero", "png")]
    good, _ = make_video("good.mp4", num_frames=16)
    image = write_png(tmp_path / "photo.png")
    specs, failures = ingest([tmp_path, tmp_path / "missing.mp4"], IngestConfig())
    assert [(s.uri, s.media_type) for s in specs] == [(str(good), "video"), (str(image), "image")]
    assert {f.uri for f in failures} == {*map(str, bad), str(tmp_path / "missing.mp4")}
    assert all(f.reason for f in failures)


def test_fsspec_memory_input(make_video, write_png, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    video, _ = make_video("clip.mp4", num_frames=16)
    image = write_png(tmp_path / "still.png", width=20, height=10)
    fs = fsspec.filesystem("memory")
    fs.pipe("/ingest-test/videos/clip.mp4", video.read_bytes())
    fs.pipe("/ingest-test/still.png", image.read_bytes())
    fs.pipe("/ingest-test/empty.mp4", b"")
    try:
        specs, failures = ingest("memory://ingest-test", IngestConfig())
        local, _ = ingest(video, IngestConfig())
    finally:
        fs.rm("/ingest-test", recursive=True)
    assert [s.uri for s in specs] == ["memory:///ingest-test/still.png", "memory:///ingest-test/videos/clip.mp4"]
    assert (specs[0].width, specs[0].height) == (20, 10)
    assert specs[1].sample_id == local[0].sample_id  # same bytes, same id, wherever they live
    assert [(f.uri, f.reason) for f in failures] == [("memory:///ingest-test/empty.mp4", "zero-length file")]


def test_config_rejects_inconsistent_lengths_and_unknown_keys():
    with pytest.raises(ConfigError, match="max_clip_s"):
        load_config(IngestConfig, None, ["min_clip_s=5", "max_clip_s=2"])
    with pytest.raises(ConfigError, match="shot_threshold"):
        load_config(IngestConfig, None, ["shot_threshold=3"])


def test_unreadable_file_is_a_failure_not_a_crash(make_video, monkeypatch):
    import instvl.media.ingest as ingest_module

    path, _ = make_video("locked.mp4")

    def refuse(uri):
        raise PermissionError(13, "Permission denied", uri)

    monkeypatch.setattr(ingest_module, "fetch_media", refuse)
    specs, failures = ingest(path, IngestConfig())
    assert specs == [] and failures[0].reason.startswith("unreadable: [Errno 13] Permission denied")
