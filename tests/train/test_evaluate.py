"""`instvl eval` end to end on a small InstVL-Synth root, plus embedding and report helpers."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("av")

from PIL import Image  # noqa: E402

from instvl.config import load_config  # noqa: E402
from instvl.train import checkpoint as ckpt  # noqa: E402
from instvl.train.config import EvalConfig  # noqa: E402
from instvl.train.evaluate import (  # noqa: E402
    Embeddings,
    embed_split,
    eval_dataset,
    evaluate,
    format_table,
    load_model,
    main,
    retrieval_report,
)
from instvl.train.model import load_tokenizer  # noqa: E402

# A small random BERT instead of MiniLM keeps model building fast; the MiniLM vocabulary is still used.
SMALL_TEXT = ("model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
              "intermediate_size: 64}")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from instvl.datasets.synth import SynthConfig
    from instvl.datasets.synth import main as synth_main

    root = tmp_path_factory.mktemp("synth")
    synth_main(SynthConfig(output=str(root), num_samples=16, seed=3, val_fraction=0.5, test_fraction=0.0,
                           image_fraction=0.0))
    return root


@pytest.fixture
def make_config(synth_root, tmp_path):
    def make(*overrides: str) -> EvalConfig:
        base = [f"data.root={synth_root}", f"run.output_dir={tmp_path / 'run'}", "num_examples=3", SMALL_TEXT]
        return load_config(EvalConfig, "train/tiny", base + list(overrides))

    return make


def test_accepts_every_key_of_the_train_preset():
    cfg = load_config(EvalConfig, "train/tiny",
                      ["checkpoint=runs/x", "rerank=dual_softmax", "grounding.steps=5"])
    assert cfg.optim.steps == 20 and cfg.checkpoint == "runs/x" and cfg.grounding.steps == 5


def test_end_to_end_report_images_and_table(make_config, capsys):
    cfg = make_config("rerank=dual_softmax", "grounding.enabled=true", "grounding.steps=30")
    assert main(cfg) == 0
    table = capsys.readouterr().out
    assert "| global |" in table and "| instance_dual_softmax |" in table and "grounding (" in table
    out = json.loads((Path(cfg.run.output_dir) / "eval" / "eval.json").read_text())
    assert out["eval_split"] == "val" and 0 < out["num_samples"] < 16
    assert out["num_instances"] >= out["num_samples"]
    for key in ("global", "instance", "global_dual_softmax", "instance_dual_softmax"):
        assert 0 <= out[key]["mean_recall"] <= 100
    assert out["instance_dual_softmax"]["rerank"] == "dual_softmax" and out["instance"]["rerank"] == "none"
    errors = out["errors"]["v2t"]
    assert sum(errors["counts"].values()) == errors["num_errors"] <= out["num_instances"]
    grounding = out["grounding"]
    assert grounding["num_instances"] == out["num_instances"]
    assert grounding["loss_last"] < grounding["loss_first"]
    images = out["images"] + grounding["images"]
    assert len(images) == 2 + 3
    for path in images:
        with Image.open(path) as image:
            assert image.format == "PNG"


def test_checkpoint_weights_are_used(make_config, tmp_path):
    cfg = make_config("num_examples=0")
    torch.manual_seed(1)
    trained = cfg.model.build()
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path / "run", 7), {"model": trained.state_dict()})
    for reference in (str(path), str(tmp_path / "run")):
        loaded = load_model(cfg.model_copy(update={"checkpoint": reference}), "cpu")
        assert torch.equal(loaded.vision_proj.weight, trained.vision_proj.weight)
    with pytest.raises(ckpt.CheckpointError, match="missing.pt"):
        load_model(cfg.model_copy(update={"checkpoint": str(tmp_path / "missing.pt")}), "cpu")


def test_embed_split_shapes_and_bookkeeping(make_config):
    cfg = make_config()
    model = load_model(cfg, "cpu").train()
    emb = embed_split(model, eval_dataset(cfg, load_tokenizer(cfg.model.text), "val"), thumbnails=True)
    assert model.training  # restored
    assert emb.video.shape == emb.text.shape == (len(emb.sample_ids), cfg.model.embed_dim)
    assert emb.inst_video.shape == emb.inst_text.shape == (len(emb.instance_ids), cfg.model.embed_dim)
    assert torch.allclose(emb.inst_video.norm(dim=-1), torch.ones(len(emb.instance_ids)), atol=1e-4)
    assert set(emb.inst_sample_ids) <= set(emb.sample_ids)
    assert len(emb.thumbnails) == len(emb.sample_ids) and len(emb.inst_thumbnails) == len(emb.instance_ids)
    assert all(0 < a <= 1 for a in emb.inst_areas)
    capped = embed_split(model, eval_dataset(cfg, load_tokenizer(cfg.model.text), None), max_samples=4)
    assert len(capped.sample_ids) == 4  # batch_size 4: stops after the first batch


def test_report_of_perfect_embeddings():
    eye = torch.eye(4)
    emb = Embeddings(eye, eye, ["a", "b", "c", "d"], ["w", "x", "y", "z"], inst_video=eye, inst_text=eye,
                     inst_sample_ids=["a", "a", "b", "c"], instance_ids=[0, 1, 0, 0],
                     instance_captions=["p", "q", "r", "s"], inst_areas=[0.1] * 4)
    report = retrieval_report(emb)
    assert report["global"]["mean_recall"] == report["instance"]["mean_recall"] == 100.0
    assert report["errors"]["v2t"]["num_errors"] == 0
    assert "| instance | 100.00 |" in format_table(report)


def test_empty_split_is_a_clear_error(make_config):
    with pytest.raises(ValueError, match="no samples in split 'nope'"):
        evaluate(make_config("eval.split=nope"))
