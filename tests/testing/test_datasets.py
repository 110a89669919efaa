"""Sample and dataset factories: valid by the validator, real shards, a mutate hook that reaches the file."""

import numpy as np

from instvl.datasets.reader import read_table
from instvl.datasets.validate import validate_dataset
from instvl.media.decode import decode_frames
from instvl.testing.datasets import COLOURS, make_sample, rows_by_id, write_dataset


def test_sample_tracks_match_the_painted_media():
    sample = make_sample(3, num_instances=2, num_frames=6, with_media=True)
    assert sample.sample_id == "s-00003" and sample.media_format == "mp4"
    frames = decode_frames(sample.media, sample.sample_id, range(6), decoder="pyav").frames
    for inst in sample.instances:
        for frame, (x0, y0, x1, y1) in zip(frames, inst.trajectory.box, strict=True):
            cx, cy = int((x0 + x1) / 2 * sample.width), int((y0 + y1) / 2 * sample.height)
            assert np.abs(frame[cy, cx].astype(int) - COLOURS[inst.instance_id]).max() < 30


def test_images_keyframes_and_status():
    image = make_sample(1, media_type="image", with_media=True, status="rejected")
    assert image.num_frames == 1 and image.media_format == "png" and image.qc.status == "rejected"
    sparse = make_sample(0, num_frames=8, keyframe_every=3)
    assert sparse.instances[0].trajectory.frame_index == [0, 3, 6]


def test_written_dataset_is_valid_and_split_into_units(tmp_path):
    root = write_dataset(tmp_path / "ds", units=2, per_unit=3, quarantine=1, with_media=True)
    assert sorted(rows_by_id(root)) == [f"s-{i:05d}" for i in range(6)]
    assert sorted(p.name for p in (root / "stats").iterdir()) == [f"shard-0000{u}.stats.json" for u in (0, 1)]
    assert validate_dataset(root, check_media=True).ok


def test_mutate_sees_every_row_with_its_position(tmp_path):
    seen = []

    def mutate(position: int, row: dict) -> None:
        seen.append(position)
        if position == 2:
            row["split"] = "nope"

    root = write_dataset(tmp_path / "bad", units=2, per_unit=2, mutate=mutate)
    assert seen == [0, 1, 2, 3]
    assert read_table(root, columns=["split"]).column("split").to_pylist().count("nope") == 1
    assert not validate_dataset(root).ok


def test_given_samples_are_written_as_they_are(tmp_path):
    samples = [make_sample(i, prefix="x", split="val") for i in (5, 7)]
    rows = rows_by_id(write_dataset(tmp_path / "given", samples))
    assert sorted(rows) == ["x-00005", "x-00007"] and {r["split"] for r in rows.values()} == {"val"}
