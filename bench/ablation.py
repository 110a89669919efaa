"""Ablation of the instance loss on InstVL-Synth: train `train/tiny` with and without L_inst, evaluate both.

Both arms share the data, the number of steps and every seed; only `model.loss.inst_loss` differs
(the paper's Table 4: "L_rec + L_global" vs "+ L_inst"). The expected outcome is that instance
retrieval mean recall rises clearly with L_inst while global retrieval does not fall. Prints a
markdown table and writes OUT/ablation.json (plus each arm's run folder and eval.json/images).

    python bench/ablation.py --samples 2500 --steps 600 --out runs/ablation
    python bench/ablation.py --samples 256 --steps 100 --out runs/ablation-smoke \
        --set model.text.trainable=false
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from instvl.config import load_config  # noqa: E402
from instvl.log import setup_logging  # noqa: E402

log = logging.getLogger("instvl.bench.ablation")
# (table row, run folder, overrides): the paper's Table 4 rows.
ARMS = [("L_rec + L_glob", "no_inst", ["model.loss.inst_loss=false"]),
        ("+ L_inst", "with_inst", ["model.loss.inst_loss=true"])]
COLUMNS = [("global", "t2v_r1"), ("global", "t2v_r5"), ("global", "t2v_r10"), ("global", "v2t_r1"),
           ("global", "v2t_r5"), ("global", "v2t_r10"), ("global", "mean_recall"),
           ("instance", "t2v_r1"), ("instance", "t2v_r5"), ("instance", "t2v_r10"), ("instance", "v2t_r1"),
           ("instance", "v2t_r5"), ("instance", "v2t_r10"), ("instance", "mean_recall")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2500, help="InstVL-Synth samples to generate")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of each arm")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the model init and the loader")
    parser.add_argument("--cache", default=".cache/instvl-synth",
                        help="folder of generated benchmarks (reused)")
    parser.add_argument("--out", default="runs/ablation", help="folder for the runs and ablation.json")
    parser.add_argument("--eval-split", default="val", help="split to evaluate ('val', 'test')")
    parser.add_argument("--preset", default="train/tiny", help="train preset both arms start from")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=C", help="override for both arms")
    return parser.parse_args()


def synth_root(args: argparse.Namespace) -> Path:
    """Generate (or reuse: finished units are skipped) the benchmark; same seed, same bytes."""
    from instvl.datasets.synth import SynthConfig
    from instvl.datasets.synth import main as synth_main

    root = Path(args.cache) / f"synth-n{args.samples}-s{args.seed}"
    synth_main(SynthConfig(output=str(root), num_samples=args.samples, seed=args.seed))
    return root


def arm_overrides(args: argparse.Namespace, root: Path, arm_dir: Path, arm: list[str]) -> list[str]:
    """Overrides shared by training and evaluating one arm."""
    return [f"data.root={root}", f"run.output_dir={arm_dir}", f"optim.steps={args.steps}",
            f"run.seed={args.seed}", f"data.seed={args.seed}", "run.ckpt_every=0", "run.progress=false",
            "run.tensorboard=false", "eval.every=0", "run.log_every=25", *args.set, *arm]


def run_arm(args: argparse.Namespace, root: Path, name: str, folder: str, arm: list[str]) -> dict[str, Any]:
    """Train one arm from scratch, then evaluate its final checkpoint."""
    from instvl.train.config import EvalConfig, TrainConfig
    from instvl.train.evaluate import evaluate
    from instvl.train.main import main as train

    arm_dir = Path(args.out) / folder
    overrides = arm_overrides(args, root, arm_dir, arm)
    started = time.perf_counter()
    train(load_config(TrainConfig, args.preset, overrides))
    trained = time.perf_counter()
    report = evaluate(load_config(EvalConfig, args.preset, overrides + [
        f"checkpoint={arm_dir}", f"eval.split={args.eval_split}", f"output={arm_dir / 'eval'}",
        "num_examples=6"]))
    return {"arm": name, "overrides": arm, "train_s": round(trained - started, 1),
            "eval_s": round(time.perf_counter() - trained, 1), "report": report}


def markdown_table(results: list[dict[str, Any]]) -> str:
    names = [f"{kind[:4]} " + ("mean R" if metric == "mean_recall" else metric.upper().replace("_R", " R@"))
             for kind, metric in COLUMNS]
    lines = ["| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(COLUMNS)]
    for result in results:
        report = result["report"]
        values = [report[kind][metric] if kind in report else float("nan") for kind, metric in COLUMNS]
        lines.append(f"| {result['arm']} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def deltas(results: list[dict[str, Any]]) -> dict[str, float]:
    """Mean-recall change from the first arm (without L_inst) to the second (with it)."""
    base, inst = (r["report"] for r in results)
    return {kind: inst[kind]["mean_recall"] - base[kind]["mean_recall"]
            for kind in ("global", "instance") if kind in base and kind in inst}


def main() -> int:
    args = parse_args()
    setup_logging()
    root = synth_root(args)
    results = [run_arm(args, root, name, folder, arm) for name, folder, arm in ARMS]
    table = markdown_table(results)
    summary = {"samples": args.samples, "steps": args.steps, "seed": args.seed, "preset": args.preset,
               "overrides": args.set, "eval_split": args.eval_split, "dataset": str(root),
               "delta_mean_recall": deltas(results), "arms": results, "table": table}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table)
    changes = ", ".join(f"{k} {v:+.2f}" for k, v in summary["delta_mean_recall"].items())
    print("\nmean-recall change with L_inst: " + changes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
