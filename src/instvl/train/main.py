"""`instvl train`: InstAP pre-training on InstVL shards, single process or under torchrun (DDP/FSDP).

Writes OUTPUT/config.yaml, OUTPUT/metrics.jsonl (+ tensorboard/), OUTPUT/checkpoints/step-*.pt and
OUTPUT/curves.png, and prints a summary. `run.resume=auto` continues from the newest checkpoint.

    instvl datasets synth out/synth --num-samples 64
    instvl train --config train/tiny --set data.root=out/synth --set run.output_dir=runs/tiny
    torchrun --nproc_per_node 8 -m instvl train --config train/vit-b16 --set data.root=/data/instvl
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instvl.config import to_yaml
from instvl.train import checkpoint as ckpt
from instvl.train import distributed as dist_utils
from instvl.train.config import TrainConfig
from instvl.train.data import InstVLDataset
from instvl.train.evaluate import embed_split, eval_dataset, retrieval_report
from instvl.train.model import InstAPConfig, load_tokenizer
from instvl.train.sinks import default_sinks, plot_curves, read_jsonl
from instvl.train.trainer import Trainer

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("loss", "l_rec", "l_glob", "l_inst", "temp_glob", "temp_inst", "lr", "samples_per_s")


def teacher_is_rebuildable(cfg: InstAPConfig) -> bool:
    """True when the frozen teacher loads from its own source (pretrained CLIP), so checkpoints skip it."""
    return cfg.teacher.kind == "clip_hf" and getattr(cfg.teacher, "vision_config", None) is None


def build_trainer(cfg: TrainConfig, info: dist_utils.DistInfo) -> Trainer:
    """Model, tokenizer, this rank's dataset and the trainer, seeded so every rank builds the same model."""
    dist_utils.seed_everything(cfg.run.seed, rank=0)
    model = cfg.model.build()
    dist_utils.seed_everything(cfg.run.seed, rank=info.rank)
    tokenizer = load_tokenizer(cfg.model.text)
    dataset = InstVLDataset(cfg.data, tokenizer, cfg.model.text.max_len, rank=info.rank,
                            world_size=info.world_size)
    return Trainer(model, dataset, cfg.optim, cfg.run, info, config_json=cfg.model_dump_json(),
                   skip_frozen=teacher_is_rebuildable(cfg.model))


def eval_hook(cfg: TrainConfig, trainer: Trainer) -> Callable[[int], dict[str, float] | None] | None:
    """A step callback that logs global/instance retrieval every `eval.every` steps (None when off)."""
    if not cfg.eval.every:
        return None
    if trainer.info.strategy == "fsdp":
        log.warning("eval.every is ignored under FSDP (sharded weights); run `instvl eval` on a checkpoint")
        return None

    def hook(step: int) -> dict[str, float] | None:
        if step % cfg.eval.every:
            return None
        dataset = eval_dataset(cfg, trainer.dataset.tokenizer, cfg.eval.split)
        model = dist_utils.unwrap(trainer.model)
        emb = embed_split(model, dataset, trainer.info.device, cfg.eval.max_samples)
        report = retrieval_report(emb)
        return {f"eval.{kind}.mean_recall": report[kind]["mean_recall"] for kind in ("global", "instance")
                if kind in report}

    return hook


def summary_table(records: list[dict[str, Any]], paths: dict[str, Path | None]) -> str:
    """The last logged values and where the outputs went, as a small markdown table."""
    last = records[-1] if records else {}
    rows = [("step", str(last.get("step", "-")))]
    rows += [(k, f"{last[k]:.4g}") for k in SUMMARY_KEYS if isinstance(last.get(k), int | float)]
    rows += [(name, str(path)) for name, path in paths.items() if path is not None]
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def main(cfg: TrainConfig) -> int:
    """CLI entry: train, then write the curve and print a summary (rank 0)."""
    info = dist_utils.init_distributed(cfg.run.strategy, cfg.run.device)
    try:
        output = Path(cfg.run.output_dir)
        resume = ckpt.resolve_resume(cfg.run.resume, output)
        trainer = build_trainer(cfg, info)
        if resume is not None:
            trainer.resume(resume)
        if info.is_main:
            output.mkdir(parents=True, exist_ok=True)
            (output / "config.yaml").write_text(to_yaml(cfg))
            trainer.sink = default_sinks(output, trainer.step if resume else None, cfg.run.tensorboard)
        trainer.on_step = eval_hook(cfg, trainer)
        trainer.fit()
        trainer.sink.close()
        if info.is_main:
            records = read_jsonl(output / "metrics.jsonl")
            curve = plot_curves(records, output / "curves.png")
            paths = {"checkpoint": ckpt.latest_checkpoint(output), "metrics": output / "metrics.jsonl",
                     "curves": curve}
            print(summary_table(records, paths))
    finally:
        dist_utils.cleanup()
    return 0
