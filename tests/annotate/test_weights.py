"""No silent random weights: presets opt in with random_init, provenance names the weights, missing
checkpoints fail at start with the model's name and the fix."""

import os
import subprocess
import sys

import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.run import AnnotateRunConfig
from instvl.annotate.weights import WeightsError
from instvl.config import ConfigError, load_config


def test_random_weights_need_random_init():
    with pytest.raises(ConfigError, match="random weights: detector \\(fake\\)"):
        load_config(AnnotateConfig, "annotate/fake", ["random_init=false"])
    with pytest.raises(ConfigError, match="tracker \\(sam2\\).*random_init: true"):
        load_config(AnnotateRunConfig, None, ["tracker.kind=sam2"])
    with pytest.raises(ValueError, match="groundingdino"):
        AnnotateConfig.model_validate({"detector": {"kind": "groundingdino"}})
    assert load_config(AnnotateConfig, "annotate/tiny").random_init
    AnnotateConfig()  # the defaults need no weights and are not random


def test_provenance_names_weights_revision_and_random_flag():
    tiny = load_config(AnnotateConfig, "annotate/tiny").model_ids()
    assert tiny["random_init"] == tiny["detector.random_init"] == "true"
    assert tiny["detector"] == "hf:tiny-random" and tiny["detector.weights"].startswith("random-init")
    gpu = load_config(AnnotateRunConfig, "annotate/gpu", ["detector.revision=v1.0"]).model_ids()
    assert gpu["random_init"] == "false"
    assert gpu["detector.weights"] == "IDEA-Research/grounding-dino-base"
    assert gpu["detector.revision"] == "v1.0"
    assert gpu["tracker.weights"] == "facebook/sam2.1-hiera-large" and gpu["tracker.revision"] == "main"
    server = load_config(AnnotateRunConfig, "annotate/gpu-server").model_ids()
    assert server["tracker.weights"] == "checkpoints/sam2.1_hiera_large.pt"
    assert "http://127.0.0.1:8000/v1" in server["captioner.weights"]
    demo = load_config(AnnotateConfig, "annotate/demo").model_ids()
    assert demo["random_init"] == "false" and demo["detector.weights"].startswith("none")


def test_missing_checkpoints_fail_with_the_model_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = load_config(AnnotateRunConfig, "annotate/gpu-server", [f"tracker.checkpoint={tmp_path / 'no.pt'}"])
    with pytest.raises(WeightsError) as err:
        cfg.check_weights()
    message = str(err.value)
    assert "'IDEA-Research/grounding-dino-tiny' is not in the Hugging Face cache" in message
    assert "--set detector.model=/path/to/folder" in message
    assert "no.pt' does not exist" in message and "--set tracker.checkpoint=" in message


def test_hf_backend_load_failure_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from instvl.annotate.detect import HFDetector

    with pytest.raises(WeightsError, match="cannot load weights 'IDEA-Research/grounding-dino-tiny'"):
        HFDetector.Config(box_threshold=0.3).build()


def test_gpu_preset_offline_without_checkpoints_fails_at_start(tmp_path):
    """`instvl annotate run` with the GPU preset, offline and with an empty hub cache: one clear error
    before any input is planned or any model is built."""
    media = tmp_path / "media"
    media.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "instvl", "annotate", "run", str(media), str(tmp_path / "out"),
               "--config", "annotate/gpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "WeightsError: model weights are missing" in done.stderr
    for model in ("IDEA-Research/grounding-dino-base", "facebook/sam2.1-hiera-large",
                  "Qwen/Qwen2.5-VL-7B-Instruct"):
        assert f"'{model}' is not in the Hugging Face cache" in done.stderr
    assert "hf download" in done.stderr
    assert not (tmp_path / "out" / "plan.json").exists()


def test_annotate_and_build_have_no_default_preset():
    for command in (["annotate", "run"], ["build"]):
        done = subprocess.run([sys.executable, "-m", "instvl", *command, "in", "out"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2
        assert "--config is required" in done.stderr and "annotate/demo" in done.stderr
        assert "annotate/tiny: CPU, offline: RANDOM WEIGHTS" in done.stderr
