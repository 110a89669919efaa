"""Fuzzing the per-input fault boundary: a few hundred corrupted and odd media files, and the run completes
with every file annotated or quarantined by name (no unit fails, no file is lost)."""

import json
from pathlib import Path

from instvl.datasets.manifest import write_manifest
from instvl.datasets.validate import validate_dataset
from instvl.testing.fuzz import make_corpus, mutate, run_corpus, seeds


def test_mutations_are_fixed_by_seed():
    import numpy as np

    data = seeds()["jpg"]
    first = [mutate(data, np.random.default_rng([0, i])) for i in range(20)]
    assert first == [mutate(data, np.random.default_rng([0, i])) for i in range(20)]
    assert all(m != data for m in first)


def test_fuzzed_corpus_ends_annotated_or_quarantined_by_name(tmp_path):
    names = make_corpus(tmp_path / "media", mutated=300, seed=0)
    result = run_corpus(tmp_path / "media", tmp_path / "out")
    summary = json.dumps(result.to_json(), indent=1)
    assert result.crashed == [] and result.unaccounted == [], summary
    assert result.files == len(names) and result.annotated + sum(result.quarantined.values()) == result.files
    assert result.annotated >= 20 and sum(result.quarantined.values()) >= 100, summary  # both paths taken
    assert result.quarantined[("probe", "DecompressionBombError")] == 1, summary
    write_manifest(tmp_path / "out")
    report = validate_dataset(tmp_path / "out")
    assert report.ok, report.summary()
    assert any(uri.endswith("latin1-\\xe9t\\xe9.mp4") for uri in _row_uris(tmp_path / "out"))


def _row_uris(root: Path) -> list[str]:
    from instvl.datasets.reader import read_table

    return [row["source"]["uri"] for row in read_table(root, columns=["source"]).to_pylist()]
