"""`instvl train`: InstAP pre-training on InstVL shards, single process or under torchrun (DDP/FSDP).

Writes OUTPUT/config.yaml, OUTPUT/metrics.jsonl (+ tensorboard/), OUTPUT/checkpoints/step-*.pt and
OUTPUT/curves.png, and prints a summary. `run.resume=auto` continues from the newest checkpoint.

    instvl datasets synth out/synth --num-samples 64
    instvl train --config train/tiny --set data.root=out/synth --set run.output_dir=runs/tiny
    torchrun --nproc_per_node 8 -m instvl train --config train/vit-b16 --set data.root=/data/instvl
"""

import logging
from pathlib import Path
from typing import Any

from instvl.config import to_yaml
from instvl.train import checkpoint as ckpt
from instvl.train import distributed as dist_utils
from instvl.train.config import TrainConfig
from instvl.train.data import InstVLDataset
from instvl.train.evaluate import embed_split, eval_dataset, retrieval_report
from instvl.train.model import InstAPConfig, load_tokenizer
from instvl.train.pretrained import init_weights
from instvl.train.sinks import default_sinks, plot_curves, read_jsonl
from instvl.train.trainer import StepHook, Trainer

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("loss", "l_rec", "l_glob", "l_inst", "temp_glob", "temp_inst", "lr", "samples_per_s")


def teacher_is_rebuildable(cfg: InstAPConfig) -> bool:
    """True when the frozen teacher loads from its own source (pretrained CLIP), so checkpoints skip it."""
    return cfg.teacher.kind == "clip_hf" and getattr(cfg.teacher, "vision_config", None) is None


def build_trainer(cfg: TrainConfig, info: dist_utils.DistInfo, init: bool = True) -> Trainer:
    """Model, tokenizer, this rank's dataset and the trainer, seeded so every rank builds the same model.

    With `init` and `run.init_from`, the weights are loaded before the model is wrapped (DDP) or
    sharded (FSDP), so every rank starts from the same full weights.
    """
    dist_utils.seed_everything(cfg.run.seed, rank=0)
    model = cfg.model.build()
    if init and cfg.run.init_from:
        init_weights(model, cfg.run.init_from, cfg.run.init_format, tuple(cfg.run.init_skip))
    dist_utils.seed_everything(cfg.run.seed, rank=info.rank)
    tokenizer = load_tokenizer(cfg.model.text)
    dataset = InstVLDataset(cfg.data, tokenizer, cfg.model.text.max_len, rank=info.rank,
                            world_size=info.world_size)
    return Trainer(model, dataset, cfg.optim, cfg.run, info, config_json=cfg.model_dump_json(),
                   skip_frozen=teacher_is_rebuildable(cfg.model))


def eval_hook(cfg: TrainConfig, trainer: Trainer) -> StepHook | None:
    """Global/instance retrieval on the eval split every `eval.every` steps (None when off).

    Under FSDP the weights are sharded, so every rank embeds the whole split with gathered weights
    (identical forwards on every rank); under DDP rank 0 alone embeds it with its full replica.
    """
    if not cfg.eval.every:
        return None

    def run(step: int) -> dict[str, float]:
        dataset = eval_dataset(cfg, trainer.dataset.tokenizer, cfg.eval.split)
        with dist_utils.full_weights(trainer.model, trainer.info) as model:
            emb = embed_split(model, dataset, trainer.info.device, cfg.eval.max_samples)
        report = retrieval_report(emb)
        return {f"eval.{kind}.mean_recall": report[kind]["mean_recall"] for kind in ("global", "instance")
                if kind in report}

    return StepHook(cfg.eval.every, run, every_rank=trainer.info.strategy == "fsdp")


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
        if resume is not None and cfg.run.init_from:
            log.info("run.init_from is ignored: resuming from %s", resume)
        trainer = build_trainer(cfg, info, init=resume is None)
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
