"""Training throughput of the tiny InstAP preset on CPU: global-only vs instance-aware, and the data loader.

For each variant it trains a few steps and reports samples/s and where a step's time goes (waiting for
data, forward, backward, the rest = clipping + optimizer). Then it times the data loader alone with
0 and more workers, to show whether decoding and cropping keep up with what the trainer consumes.

    python bench/train.py                      # makes a small InstVL-Synth dataset in a temp folder
    python bench/train.py --root out/synth --steps 20 --batch-size 8 --workers 2
    python bench/train.py --preset train/vit-b16 --device cuda --precision bf16 --batch-size 32 \
        --samples 512 --peak-tflops 989      # GPU: adds model FLOPs per sample and MFU (H100 bf16 dense)

MFU = (FLOPs of one forward+backward, counted by torch's FlopCounterMode, frozen teacher included)
/ measured step time / the device's peak FLOP/s given with --peak-tflops.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from instvl.config import load_config  # noqa: E402
from instvl.train.batch import to_device  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.data import InstVLDataset, make_loader  # noqa: E402
from instvl.train.distributed import DistInfo  # noqa: E402
from instvl.train.main import build_trainer  # noqa: E402
from instvl.train.model import load_tokenizer  # noqa: E402

VARIANTS = {"global only (L_rec + L_glob)": ["model.loss.inst_loss=false"],
            "instance-aware (+ L_inst)": ["model.loss.inst_loss=true"]}


def make_dataset(folder: Path, samples: int) -> Path:
    from instvl.datasets.synth import SynthConfig, generate

    generate(load_config(SynthConfig, "datasets/synth-tiny", [f"output={folder}", f"num_samples={samples}",
                                                              "samples_per_shard=8"]))
    return folder


def train_variant(args: argparse.Namespace, base: list[str], extra: list[str], out: Path) -> dict[str, float]:
    cfg = load_config(TrainConfig, args.preset, base + extra + [
        f"optim.steps={args.steps}", f"run.output_dir={out}", "run.tensorboard=false", "run.progress=false"])
    trainer = build_trainer(cfg, DistInfo(device=args.device))
    history = trainer.fit()[2:] or trainer.history  # the first steps include warm-up costs
    mean = {k: statistics.fmean(r[k] for r in history)
            for k in ("data_s", "forward_s", "backward_s", "step_s")}
    mean["samples_per_s"] = statistics.fmean(r["samples_per_s"] for r in history)
    mean["other_s"] = mean["step_s"] - mean["data_s"] - mean["forward_s"] - mean["backward_s"]
    mean["flops"] = step_flops(trainer, cfg)
    return mean


def step_flops(trainer, cfg: TrainConfig) -> float:
    """FLOPs of one forward+backward on one batch, as torch's FlopCounterMode counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = next(iter(make_loader(trainer.dataset)))
    batch.pop("data_position", None)
    batch = to_device(batch, trainer.info.device)
    dtype = torch.bfloat16 if cfg.run.precision == "bf16" else torch.float32
    with FlopCounterMode(display=False) as counter, torch.autocast(
            torch.device(trainer.info.device).type, dtype=dtype, enabled=cfg.run.precision == "bf16"):
        trainer.module(batch)["loss"].backward()
    trainer.module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def loader_throughput(preset: str, base: list[str], workers: int, batches: int) -> float:
    cfg = load_config(TrainConfig, preset, base + [f"data.workers={workers}"])
    dataset = InstVLDataset(cfg.data, load_tokenizer(cfg.model.text), cfg.model.text.max_len)
    loader = iter(make_loader(dataset))
    next(loader)  # worker start-up is not throughput
    started, count = time.perf_counter(), 0
    for _ in range(batches):
        count += next(loader)["video"].shape[0]
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="existing dataset root (default: generate InstVL-Synth)")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="train/tiny",
                        help="train preset (train/vit-b16, train/vit-l14 on a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="default: the preset's")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s in this precision, to report MFU "
                             "(H100 bf16 dense: 989)")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides (a.b=c)")
    parser.add_argument("--json", help="also write the measured rows to this JSON file")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else make_dataset(Path(tmp) / "synth", args.samples)
        base = [f"data.root={root}", "data.split=null", f"data.batch_size={args.batch_size}",
                f"run.device={args.device}", "run.strategy=none"]
        base += ([f"run.precision={args.precision}"] if args.precision else []) + args.set
        print(f"{args.preset} on {args.device}, dataset {root}, batch {args.batch_size}, "
              f"{args.steps} steps per variant (first 2 not timed)\n")
        print("| variant | samples/s | data s | forward s | backward s | optimizer+other s | step s | "
              "GFLOP/sample | MFU |")
        print("|---|---|---|---|---|---|---|---|---|")
        consumed = {}
        for name, extra in VARIANTS.items():
            m = train_variant(args, base, extra, Path(tmp) / name.split()[0])
            consumed[name] = m["samples_per_s"]
            peak = args.peak_tflops * 1e12 if args.peak_tflops else None
            rows.append({"preset": args.preset, "variant": name, **m,
                         "mfu": m["flops"] / m["step_s"] / peak if peak else None})
            mfu = (f"{100 * m['flops'] / m['step_s'] / (args.peak_tflops * 1e12):.1f}%" if args.peak_tflops
                   else "n/a")
            print(f"| {name} | {m['samples_per_s']:.2f} | {m['data_s']:.3f} | {m['forward_s']:.3f} | "
                  f"{m['backward_s']:.3f} | {m['other_s']:.3f} | {m['step_s']:.3f} | "
                  f"{m['flops'] / args.batch_size / 1e9:.2f} | {mfu} |")
        print("\n| data loader | samples/s | vs. instance-aware trainer |")
        print("|---|---|---|")
        for workers in sorted({0, args.workers}):
            rate = loader_throughput(args.preset, base, workers, batches=max(4, args.steps))
            ratio = rate / max(consumed["instance-aware (+ L_inst)"], 1e-9)
            print(f"| {workers} workers | {rate:.2f} | {ratio:.1f}x |")
            rows.append({"preset": args.preset, "loader_workers": workers, "samples_per_s": rate})
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
