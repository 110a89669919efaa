"""`instvl annotate run` end to end with the `vllm` captioner on vLLM's real CPU engine: two InstVL-Synth
clips, the fake detector and tracker, shards that validate, every caption from the engine; in calls
(`llm.chat` per batch) and fed continuously (`concurrency`: single requests in flight)."""

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


@pytest.mark.parametrize("concurrency", [0, 4])
def test_annotate_run_captions_two_synth_clips_with_the_vllm_engine(vllm, tiny_vlm, tmp_path, concurrency):
    synth, output = tmp_path / "synth", tmp_path / "corpus"
    instvl("datasets", "synth", str(synth), "--format", "raw", "--num-samples", "2")
    captioner = {"kind": "vllm", "model": str(tiny_vlm), "dtype": "float32", "max_model_len": 1024,
                 "enforce_eager": True, "max_tokens": 16, "seed": 1, "concurrency": concurrency,
                 "prompts": {"visual": {"max_images": 4, "max_side": 160}}}
    instvl("annotate", "run", str(synth / "media"), str(output), "--config", "annotate/fake",
           "--set", f"captioner={json.dumps(captioner)}")
    report = validate_dataset(output, check_media=True)
    assert report.ok, report.summary()
    quarantine = sorted((output / "quarantine").glob("*.parquet"))
    failures = [f"{r['uri']}: {r['stage']}: {r['reason']}"
                for path in quarantine for r in pq.read_table(path).to_pylist()]
    assert not failures, "\n".join(failures)
    rows = read_table(output).to_pylist()
    assert len(rows) == 2 and {r["media_type"] for r in rows} == {"video"}
    for row in rows:
        models = {kv["key"]: kv["value"] for kv in row["provenance"]["models"]}
        assert models["captioner"] == f"vllm:{tiny_vlm}"
        assert row["global_caption"]  # the engine's (random) words, cleaned
    instances = [inst for row in rows for inst in row["instances"]]
    assert instances, "the fake detector's seeded boxes give at least one clip instances"
    assert all(inst["caption"] for inst in instances)
