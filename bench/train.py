"""Training throughput of the tiny InstAP preset on CPU: global-only vs instance-aware, and the data loader.

For each variant it trains a few steps and reports samples/s and where a step's time goes (waiting for
data, forward, backward, the rest = clipping + optimizer). Then it times the data loader alone with
0 and more workers, to show whether decoding and cropping keep up with what the trainer consumes.

    python bench/train.py                      # makes a small InstVL-Synth dataset in a temp folder
    python bench/train.py --root out/synth --steps 20 --batch-size 8 --workers 2
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from instvl.config import load_config  # noqa: E402
from instvl.train.data import InstVLDataset, make_loader  # noqa: E402
from instvl.train.distributed import DistInfo  # noqa: E402
from instvl.train.model import load_tokenizer  # noqa: E402
from instvl.train.run import TrainConfig, build_trainer  # noqa: E402

VARIANTS = {"global only (L_rec + L_glob)": ["model.loss.inst_loss=false"],
            "instance-aware (+ L_inst)": ["model.loss.inst_loss=true"]}


def make_dataset(folder: Path, samples: int) -> Path:
    from instvl.datasets.synth import SynthConfig, generate

    generate(load_config(SynthConfig, "datasets/synth-tiny", [f"output={folder}", f"num_samples={samples}",
                                                              "samples_per_shard=8"]))
    return folder


def train_variant(base: list[str], extra: list[str], steps: int, out: Path) -> dict[str, float]:
    cfg = load_config(TrainConfig, "train/tiny", base + extra + [f"optim.steps={steps}", f"run.output_dir={out}",
                                                                  "run.tensorboard=false", "run.progress=false"])
    trainer = build_trainer(cfg, DistInfo())
    history = trainer.fit()[2:] or trainer.history  # the first steps include warm-up costs
    mean = {k: statistics.fmean(r[k] for r in history) for k in ("data_s", "forward_s", "backward_s", "step_s")}
    mean["samples_per_s"] = statistics.fmean(r["samples_per_s"] for r in history)
    mean["other_s"] = mean["step_s"] - mean["data_s"] - mean["forward_s"] - mean["backward_s"]
    return mean


def loader_throughput(base: list[str], workers: int, batches: int) -> float:
    cfg = load_config(TrainConfig, "train/tiny", base + [f"data.workers={workers}"])
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else make_dataset(Path(tmp) / "synth", args.samples)
        base = [f"data.root={root}", "data.split=null", f"data.batch_size={args.batch_size}"]
        print(f"dataset {root}, batch {args.batch_size}, {args.steps} steps per variant (first 2 not timed)\n")
        print("| variant | samples/s | data s | forward s | backward s | optimizer+other s | step s |")
        print("|---|---|---|---|---|---|---|")
        consumed = {}
        for name, extra in VARIANTS.items():
            m = train_variant(base, extra, args.steps, Path(tmp) / name.split()[0])
            consumed[name] = m["samples_per_s"]
            print(f"| {name} | {m['samples_per_s']:.2f} | {m['data_s']:.3f} | {m['forward_s']:.3f} | "
                  f"{m['backward_s']:.3f} | {m['other_s']:.3f} | {m['step_s']:.3f} |")
        print("\n| data loader | samples/s | vs. instance-aware trainer |")
        print("|---|---|---|")
        for workers in sorted({0, args.workers}):
            rate = loader_throughput(base, workers, batches=max(4, args.steps))
            ratio = rate / max(consumed["instance-aware (+ L_inst)"], 1e-9)
            print(f"| {workers} workers | {rate:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
