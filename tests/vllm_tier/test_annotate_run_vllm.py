"""`instvl annotate run` end to end with the `vllm` captioner on vLLM's real CPU engine: two InstVL-Synth
clips, the fake detector and tracker, shards that validate, every caption from the engine."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instvl.datasets.reader import read_table
from instvl.datasets.validate import validate_dataset

pytestmark = pytest.mark.vllm


def instvl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The installed `instvl` command (a fresh process, as a user runs it; vLLM spawns its engine there)."""
    command = [str(Path(sys.executable).parent / "instvl"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n"
                                    f"{result.stderr[-6000:]}")
    return result


def test_annotate_run_captions_two_synth_clips_with_the_vllm_engine(vllm, tiny_vlm, tmp_path):
    synth, output = tmp_path / "synth", tmp_path / "corpus"
    instvl("datasets", "synth", str(synth), "--format", "raw", "--num-samples", "2")
    captioner = {"kind": "vllm", "model": str(tiny_vlm), "dtype": "float32", "max_model_len": 1024,
                 "enforce_eager": True, "max_tokens": 16, "seed": 1,
                 "prompts": {"visual": {"max_images": 4, "max_side": 160}}}
    instvl("annotate", "run", str(synth / "media"), str(output), "--config", "annotate/fake",
           "--set", f"captioner={json.dumps(captioner)}")
    report = validate_dataset(output, check_media=True)
    assert report.ok, report.summary()
    quarantined = [f"{r['uri']}: {r['stage']}: {r['reason']}" for path in (output / "quarantine").glob("*.parquet")
                   for r in pq.read_table(path).to_pylist()]
    assert not quarantined, "\n".join(quarantined)
    rows = read_table(output).to_pylist()
    assert len(rows) == 2 and {r["media_type"] for r in rows} == {"video"}
    for row in rows:
        assert str(tiny_vlm) in json.dumps(row["provenance"]["models"])  # captioner -> vllm:<model dir>
        assert row["instances"], "the fake detector finds objects in every synth clip"
        assert isinstance(row["global_caption"], str)
        assert all(isinstance(inst["caption"], str) for inst in row["instances"])
