"""The training loop: AdamW with cosine warm-up, accumulation, clipping, bf16, metrics and checkpoints.

The trainer knows only that `model(batch)` returns a dict with a scalar `loss` (other scalar entries
are logged too). It consumes pre-collated batches from an `InstVLDataset`, records their data position
and saves everything needed to continue a run bit for bit (`checkpoint.py`).
"""

import contextlib
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instvl.deps import require
from instvl.train import checkpoint as ckpt
from instvl.train import distributed as dist_utils
from instvl.train.batch import to_device
from instvl.train.config import OptimConfig, RunConfig
from instvl.train.data import DataState, InstVLDataset, make_loader
from instvl.train.sinks import MetricsSink, NullSink

torch = require("torch", "train")
log = logging.getLogger(__name__)
NO_DECAY_NAMES = ("temp", "logit_scale", "pos_embed", "pos_space", "pos_time", "position_embeddings",
                  "cls_token", "mask_token")
"""Name parts of parameters kept out of weight decay besides norms and biases (1-d): temperatures and
position tables (the student's learned `pos_space`/`pos_time`, BERT's `position_embeddings`)."""


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, with no weight decay on norms, biases, temperatures and position tables."""
    wanted = {id(p) for p in model.student_parameters()} if hasattr(model, "student_parameters") else None
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, param in model.named_parameters():
        if not param.requires_grad or (wanted is not None and id(param) not in wanted):
            continue
        skip = param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES)
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_schedule(optimizer: Any, warmup: int, total: int, min_ratio: float) -> Any:
    """Linear warm-up from ~0 to the base lr over `warmup` steps, then cosine down to base * min_ratio."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class StepHook:
    """Work every `every` optimizer steps (an evaluation) whose metrics are logged with that step.

    Every rank knows when it is due, so every rank logs that step (the metric reduction is a collective).
    `every_rank=False`: `run` runs on rank 0 while the others wait; `every_rank=True`: on every rank (it
    runs collectives itself, e.g. forwards of an FSDP-sharded model), and rank 0's metrics are logged.
    """

    every: int
    run: Callable[[int], dict[str, float]]
    every_rank: bool = False

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0


class Trainer:
    """Runs `optim.steps` optimizer steps of `model` on `dataset`; see the module docstring."""

    def __init__(self, model: Any, dataset: InstVLDataset, optim: OptimConfig, run: RunConfig,
                 info: dist_utils.DistInfo, *, sink: MetricsSink | None = None,
                 config_json: str | None = None, skip_frozen: bool = False):
        self.module, self.dataset, self.optim_cfg, self.run_cfg, self.info = model, dataset, optim, run, info
        self.model = dist_utils.wrap_model(model.to(info.device), info)
        self.optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr,
                                           betas=optim.betas, eps=optim.eps)
        self.scheduler = cosine_schedule(self.optimizer, optim.warmup_steps, optim.steps, optim.min_lr_ratio)
        self.sink = sink if sink is not None and info.is_main else NullSink()
        self.config_json, self.skip_frozen = config_json, skip_frozen
        self.data_state, self.step = DataState(), 0
        self.history: list[dict[str, Any]] = []
        self.on_step: StepHook | None = None
        """Periodic work after a step (a held-out evaluation); its metrics are logged."""

    @property
    def output_dir(self) -> Path:
        return Path(self.run_cfg.output_dir)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, step, data position, RNG states.

        With the ranks and data workers of the checkpoint the run continues bit for bit. With another
        number of either the per-reader data positions mean nothing, so the data stream restarts at the
        epoch after the newest one any reader had reached (elastic resume, with a warning).
        """
        state = ckpt.load_checkpoint(path)
        if self.info.strategy == "fsdp":
            ckpt.check_fit(self.module, *dist_utils.key_mismatch(self.model, state["model"]), path)
            dist_utils.load_full_states(self.model, self.optimizer, state["model"], state["optimizer"],
                                        self.info)
        else:
            ckpt.load_model_state(self.module, state["model"], path)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        ranks = state["ranks"]
        workers = _saved_workers(state)
        if len(ranks) == self.info.world_size and workers in (None, self.dataset.cfg.workers):
            own = ranks[self.info.rank]
            self.data_state.load_state_dict(own["data"])
            self.dataset.load_state_dict(own["data"])
            ckpt.set_rng_state(own["rng"])
            log.info("resumed from %s at step %d", path, self.step)
            return
        restart = max((_data_state(r["data"]).next_epoch() for r in ranks), key=lambda d: d.start_epoch)
        self.data_state.load_state_dict(restart.state_dict())
        self.dataset.load_state_dict(restart.state_dict())
        dist_utils.seed_everything(self.run_cfg.seed + self.step, self.info.rank)
        log.warning("%s was saved by %d ranks x %s data workers and is resumed by %d x %d: model, optimizer "
                    "and schedule carry over at step %d, the data stream restarts at epoch %d", path,
                    len(ranks), workers if workers is not None else "?", self.info.world_size,
                    self.dataset.cfg.workers, self.step, restart.start_epoch)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective: every rank must call it)."""
        model_state = dist_utils.full_state_dict(self.model, self.info)
        optim_state = dist_utils.full_optimizer_state(self.model, self.optimizer, self.info)
        own = {"data": self.data_state.state_dict(), "rng": ckpt.rng_state(),
               "workers": self.dataset.cfg.workers}
        ranks = dist_utils.gather_objects(own, self.info)
        path = None
        if self.info.is_main:
            if self.skip_frozen:
                frozen = {n for n, p in self.module.named_parameters() if not p.requires_grad}
                model_state = {k: v for k, v in model_state.items() if k not in frozen}
            payload = {"model": model_state, "optimizer": optim_state,
                       "scheduler": self.scheduler.state_dict(), "step": self.step,
                       "config": self.config_json, "ranks": ranks}
            path = ckpt.save_checkpoint(ckpt.checkpoint_path(self.output_dir, self.step), payload,
                                        self.run_cfg.keep_last)
        dist_utils.barrier(self.info)
        return path

    def fit(self) -> list[dict[str, Any]]:
        """Train to `optim.steps`; returns the logged records (rank 0) and leaves a final checkpoint."""
        self.model.train()
        batches = iter(make_loader(self.dataset, seed=self.run_cfg.seed))
        bar = self._progress()
        while self.step < self.optim_cfg.steps:
            record = self.train_step(batches)
            self.step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            due = self.on_step is not None and self.on_step.due(self.step)
            self._log(record, due, self._run_hook() if due else {})
            if self.run_cfg.ckpt_every and self.step % self.run_cfg.ckpt_every == 0:
                self.save()
        if bar is not None:
            bar.close()
        if not ckpt.checkpoint_path(self.output_dir, self.step).exists():
            self.save()
        return self.history

    def _progress(self) -> Any:
        if not (self.info.is_main and self.run_cfg.progress and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=self.optim_cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)

    def _run_hook(self) -> dict[str, float]:
        """The due hook's metrics on rank 0 ({} elsewhere); every rank leaves it together."""
        hook = self.on_step
        if hook is None:
            return {}
        extra = hook.run(self.step) if hook.every_rank or self.info.is_main else {}
        dist_utils.barrier(self.info)
        return extra if self.info.is_main else {}

    def _log(self, record: dict[str, Any], due: bool, extra: dict[str, float]) -> None:
        # Decided from the step alone, identically on every rank: the reduction below is a collective.
        every = self.run_cfg.log_every
        if not (due or self.step % every == 0 or self.step == self.optim_cfg.steps or self.step == 1):
            return
        timing = {k: record.pop(k) for k in ("samples", "data_s", "forward_s", "backward_s", "step_s")}
        record = dist_utils.all_reduce_mean(record, self.info)
        samples = timing["samples"] * self.info.world_size
        record |= {"step": self.step, "samples_per_s": samples / max(timing["step_s"], 1e-9), **timing,
                   "samples": samples, **extra}
        self.history.append(record)
        self.sink.write(record)

    def _next_batch(self, batches: Any) -> dict[str, Any]:
        """The next non-empty batch (a batch whose every sample failed to decode is passed over)."""
        while True:
            batch = next(batches)
            self.data_state.advance(batch.pop("data_position"))
            if batch["video"].shape[0] > 0:
                return to_device(batch, self.info.device)

    def _sync(self) -> None:
        if self.info.device.startswith("cuda"):
            torch.cuda.synchronize()

    def train_step(self, batches: Any) -> dict[str, Any]:
        """One optimizer step over `grad_accum` batches; returns its metrics."""
        accum = self.optim_cfg.grad_accum
        sums: defaultdict[str, float] = defaultdict(float)
        autocast = torch.autocast(torch.device(self.info.device).type, dtype=torch.bfloat16,
                                  enabled=self.run_cfg.precision == "bf16")
        started = time.perf_counter()
        for micro in range(accum):
            tick = time.perf_counter()
            batch = self._next_batch(batches)
            sums["data_s"] += time.perf_counter() - tick
            sums["samples"] += batch["video"].shape[0]
            for kind, (cut, total) in batch.pop("text_cut", {}).items():  # captions cut by the tokenizer
                sums[f"text_cut_{kind}"] += cut / max(total, 1) / accum
            sync = contextlib.nullcontext() if micro == accum - 1 else self._no_sync()
            with sync:
                tick = time.perf_counter()
                with autocast:
                    out = self.model(batch)
                self._sync()
                sums["forward_s"] += time.perf_counter() - tick
                tick = time.perf_counter()
                (out["loss"] / accum).backward()
                self._sync()
                sums["backward_s"] += time.perf_counter() - tick
            self._accumulate(sums, out, accum)
        sums["grad_norm"], sums["lr"] = self._clip_and_step()
        sums["step_s"] = time.perf_counter() - started
        return dict(sums)

    def _no_sync(self) -> Any:
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()

    def _accumulate(self, sums: dict[str, float], out: dict[str, Any], accum: int) -> None:
        loss = float(out["loss"].detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {self.step + 1}: the loss is {loss}; lower optim.lr or use fp32")
        for key, value in out.items():
            if torch.is_tensor(value) and value.numel() == 1:
                sums[key] += float(value.detach()) / accum

    def _clip_and_step(self) -> tuple[float, float]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        clip = self.optim_cfg.clip_grad
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm), lr


def _data_state(saved: dict[str, Any]) -> DataState:
    state = DataState()
    state.load_state_dict(saved)
    return state


def _saved_workers(state: dict[str, Any]) -> int | None:
    """The data.workers a checkpoint was written with (None when it does not say)."""
    ranks = state["ranks"]
    if ranks and "workers" in ranks[0]:
        return int(ranks[0]["workers"])
    try:  # checkpoints from before the per-rank record: the run config
        return int(json.loads(state.get("config") or "{}")["data"]["workers"])
    except (KeyError, TypeError, ValueError):
        return None
