"""`instvl demo [OUT]`: the whole toolkit once, offline on a CPU, in a few minutes.

1. InstVL-Synth writes a folder of MP4 videos and JPEG images (plus their ground truth).
2. The corpus-build flow annotates them on Prefect's embedded server with the `annotate/demo` preset:
   colour segmentation finds and names the coloured objects, template matching tracks them and captions
   are computed from their pixels and boxes (no weights, no ground truth).
3. The shards are validated and inspected (OUT/corpus/report.html, with rendered trajectories).
4. InstAP trains a few steps on the shards and global/instance retrieval is evaluated.

    instvl demo demo-out
"""

import logging
from pathlib import Path

from pydantic import Field

from instvl.config import BaseConfig, load_config

log = logging.getLogger(__name__)


class DemoConfig(BaseConfig):
    """What the demo generates, annotates and trains."""

    output: str = "demo-out"
    num_media: int = Field(6, ge=1)
    """Generated inputs (videos and images)."""
    image_fraction: float = Field(0.25, ge=0, le=1)
    seed: int = 0
    annotate_preset: str = "annotate/demo"
    train_preset: str = "train/tiny"
    train: bool = True
    train_steps: int = Field(10, ge=1)
    renders: int = Field(2, ge=0)
    """Samples rendered as GIFs with their trajectories and captions."""


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def make_media(cfg: DemoConfig) -> Path:
    from instvl.datasets.synth import SynthConfig, generate

    media_root = Path(cfg.output) / "media"
    synth = load_config(SynthConfig, "datasets/synth-tiny", values={
        "output": str(media_root), "num_samples": cfg.num_media, "seed": cfg.seed, "format": "raw",
        "image_fraction": cfg.image_fraction})
    generate(synth)
    return media_root / "media"


def build(cfg: DemoConfig, media: Path) -> Path:
    from instvl.datasets.manifest import summarize
    from instvl.flows.build_corpus import build_corpus
    from instvl.flows.config import BuildConfig

    corpus = Path(cfg.output) / "corpus"
    paths = {"input": str(media), "output": str(corpus)}
    build_cfg = load_config(BuildConfig, cfg.annotate_preset, values=paths)
    summary = build_corpus(build_cfg)
    print(summarize(summary["manifest"], corpus))
    if summary["failed"]:
        raise RuntimeError(f"units failed: {summary['failed']}")
    return corpus


def check(cfg: DemoConfig, corpus: Path) -> None:
    from instvl.datasets.inspect import InspectConfig
    from instvl.datasets.inspect import main as inspect_main
    from instvl.datasets.validate import validate_dataset

    report = validate_dataset(corpus)
    print(report.summary())
    if not report.ok:
        raise RuntimeError(f"{corpus}: validation failed")
    inspect_main(InspectConfig(root=str(corpus), renders=cfg.renders))


def train_and_eval(cfg: DemoConfig, corpus: Path) -> None:
    from instvl.train.config import EvalConfig, TrainConfig
    from instvl.train.evaluate import main as eval_main
    from instvl.train.main import main as train_main

    run_dir = Path(cfg.output) / "run"
    values = {"data.root": str(corpus), "run.output_dir": str(run_dir), "optim.steps": cfg.train_steps,
              "run.ckpt_every": cfg.train_steps, "data.split": None}
    train_main(load_config(TrainConfig, cfg.train_preset, values=values))
    eval_values = {**values, "checkpoint": str(run_dir), "eval.split": None}
    eval_main(load_config(EvalConfig, cfg.train_preset, values=eval_values))


def main(cfg: DemoConfig) -> int:
    _step("1/4 generating sample media (InstVL-Synth, raw MP4 + JPEG)")
    media = make_media(cfg)
    _step(f"2/4 building the corpus with {cfg.annotate_preset} (Prefect, embedded server)")
    corpus = build(cfg, media)
    _step("3/4 validating and inspecting the shards")
    check(cfg, corpus)
    if cfg.train:
        _step(f"4/4 training InstAP ({cfg.train_preset}, {cfg.train_steps} steps) and evaluating retrieval")
        train_and_eval(cfg, corpus)
    print(f"\ndone: shards in {corpus}, report {corpus / 'report.html'}", flush=True)
    return 0
