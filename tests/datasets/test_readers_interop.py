"""The shards open as they are in pyarrow, pandas, DuckDB, polars and Hugging Face `datasets`."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from instvl.datasets.records import QCRecord

REVIEWED_AT = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture
def root(make_dataset, sample_factory) -> Path:
    """Two shards, 5 samples: 2 + 0 + 1 + 3 + 2 instances, one reviewed sample, one with media."""
    samples = [sample_factory(i, num_instances=n, num_frames=4) for i, n in enumerate([2, 0, 1, 3, 2])]
    samples[2].qc = QCRecord("accepted", "rev", REVIEWED_AT, 7, [])
    samples[4] = sample_factory(4, num_instances=2, num_frames=4, with_media=True)
    return make_dataset(units=2, samples=samples)


def shard_glob(root: Path) -> str:
    return str(root / "shards" / "*.parquet")


def test_pyarrow(root):
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in (root / "shards").glob("*.parquet"))
    assert pq.read_table(files).num_rows == 5
    # the stats files sit beside the shards, so folder discovery must skip non-Parquet files
    folder = ds.dataset(str(root / "shards"), format="parquet", exclude_invalid_files=True)
    assert folder.to_table(columns=["sample_id"]).num_rows == 5
    nested = pq.ParquetFile(root / "shards" / "shard-00000-000.parquet").read(
        columns=["instances.list.element.trajectory.box"])
    assert nested.num_rows == 3


def test_pandas(root):
    pd = pytest.importorskip("pandas")
    frame = pd.concat([pd.read_parquet(p) for p in sorted((root / "shards").glob("*.parquet"))])
    assert list(frame["sample_id"]) == [f"s-{i:05d}" for i in range(5)]
    first_box = frame["instances"].iloc[0][0]["trajectory"]["box"][0]
    assert np.allclose(np.asarray(first_box, np.float32), [0.05, 0.1, 0.35, 0.3])
    assert len(frame["instances"].iloc[1]) == 0
    assert frame["qc"].iloc[2]["reviewed_at"] == REVIEWED_AT


def test_duckdb(root):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    source = f"read_parquet('{shard_glob(root)}')"
    assert con.execute(f"SELECT sum(len(instances)) FROM {source}").fetchone()[0] == 8
    unnested = con.execute(f"SELECT sample_id, unnest(instances).phrase AS phrase FROM {source}").fetchall()
    assert len(unnested) == 8 and ("s-00003", "green triangle") in unnested
    query = f"SELECT instances[1].trajectory.box[1] FROM {source} WHERE sample_id = 's-00000'"
    box = con.execute(query).fetchone()[0]
    assert np.allclose(box, [0.05, 0.1, 0.35, 0.3])
    reviewed = con.execute(f"SELECT sample_id, qc.reviewed_at FROM {source} ORDER BY sample_id").fetchall()
    assert reviewed[2] == ("s-00002", REVIEWED_AT) and reviewed[0][1] is None  # needs pytz
    assert con.execute(f"SELECT count(*) FROM {source} WHERE qc.status = 'accepted'").fetchone()[0] == 1


def test_polars(root):
    pl = pytest.importorskip("polars")
    lazy = pl.scan_parquet(shard_glob(root))
    assert lazy.select(pl.len()).collect().item() == 5
    exploded = lazy.select("sample_id", "instances").explode("instances", empty_as_null=True).collect()
    assert exploded.height == 8 + 1  # the sample without instances stays, as a null
    phrases = exploded.select(pl.col("instances").struct.field("phrase")).to_series().to_list()
    assert phrases.count(None) == 1 and phrases.count("red square") == 4
    status = lazy.select(pl.col("qc").struct.field("status")).collect().to_series().to_list()
    assert status == ["auto", "auto", "accepted", "auto", "auto"]


def test_hugging_face_datasets(root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (root / "shards").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(tmp_path / "hf" / "ds"))
    assert ds.num_rows == 5 and ds[1]["instances"] == []
    first = ds[0]["instances"][0]
    assert first["phrase"] == "red square" and len(first["trajectory"]["box"]) == 4
    assert ds[2]["qc"]["reviewed_at"] == REVIEWED_AT
    assert isinstance(ds[4]["media"], bytes) and ds[4]["media"][4:8] == b"ftyp"
    boxes = ds.with_format("numpy")[0]["instances"][0]["trajectory"]["box"]
    boxes = np.stack(list(boxes)) if boxes.dtype == object else boxes
    assert boxes.shape == (4, 4) and boxes.dtype == np.float32
