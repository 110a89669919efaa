"""Broken input files are quarantined with their reason; the good ones become samples; the build succeeds."""

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from instvl.datasets.reader import read_table
from instvl.datasets.validate import validate_dataset
from instvl.flows.build_corpus import main


def add_broken_files(folder: Path, good_video: Path) -> dict[str, str]:
    """Writes broken files next to good ones; returns file name -> a word its quarantine reason holds."""
    from PIL import Image

    data = good_video.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "noise.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes())
    (folder / "empty.mp4").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    (folder / "photo.mp4").write_bytes(jpeg.getvalue())
    return {"truncated.mp4": "truncated", "noise.mp4": "not a video", "empty.mp4": "zero-length",
            "photo.mp4": "JPEG"}


def quarantined(root: Path) -> dict[str, dict]:
    rows = [row for path in sorted((root / "quarantine").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    return {Path(row["uri"]).name: row for row in rows}


def test_broken_files_are_quarantined_and_build_succeeds(prefect_harness, synth_media, copy_media,
                                                         make_config, tmp_path, capsys):
    media = copy_media(synth_media(num_samples=6, image_fraction=0.4))
    good = sorted(p.name for p in media.iterdir())
    broken = add_broken_files(media, next(media.glob("*.mp4")))
    out = tmp_path / "corpus"
    assert main(make_config(media, out, "out.sources_per_unit=4")) == 0

    found = quarantined(out)
    assert sorted(found) == sorted(broken)
    for name, word in broken.items():
        assert word in found[name]["reason"], found[name]
        assert found[name]["stage"] == "probe"
    sources = {Path(row["source"]["uri"]).name for row in read_table(out, columns=["source"]).to_pylist()}
    assert sources == set(good)
    assert validate_dataset(out).ok
    printed = capsys.readouterr().out
    assert "quarantined inputs: 4" in printed and "empty.mp4: zero-length" in printed
