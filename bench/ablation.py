"""Ablation of the instance loss on InstVL-Synth (the paper's Tables 4-5), over seeds, with intervals.

Every arm trains `train/tiny` from scratch on the same benchmark for the same number of steps, once per
seed (the seed drives the model init, the masks and the loader order; the data are fixed), and is scored
on the same split with plain embedding similarity. Arms (`--arms`, comma-separated):

    global      L_rec + L_glob (no instance branch)                      Table 4, row 1
    inst        + L_inst (lambda `LAMBDA_INST`, picked on the dev split; separate tau, trajectory boxes)
                                                                         Table 4, row 2
    gi          g+i: the instance captions as extra global captions of their whole clip, no L_inst
                (`model.loss.inst_as_global`, weight 1 like every global caption, the global tau):
                the paper's "UMT (InstVL; g+i)"
    gi_w01      g+i at weight 0.1
    shared_tau  + L_inst with the global temperature                     Table 5 switches
    w005, w01, w02  + L_inst with lambda 0.05 / 0.1 (the paper's) / 0.2
    single_box  + L_inst with the trajectory's first box on every frame

Per arm: mean and a 95% t-interval over seeds of global and instance mean recall; per arm against
`global` (and `inst` against `gi`): the paired difference over seeds with its t-interval, and a paired
bootstrap over queries per seed; the instance error breakdown (V2T top-1 errors). Each finished run
leaves OUT/ARM/seed-S/result.json (per-query ranks included), so a rerun skips it and `--report-only`
rebuilds the table from them. `--doc` rewrites the benchmark's generated block of docs/BENCHMARKS.md.
Benchmarks (`--benchmark`, see `BENCHMARKS`): `ablation`, scenes of look-alikes that differ in one
attribute; `ablation-scene`, whose look-alikes also share colour and motion, so that they are confused
with each other rather than with other clips' objects.

    python bench/ablation.py --arms global,inst,gi --seeds 0,1,2 --steps 500 --out runs/ablation \\
        --json runs/ablation/ablation.json --doc docs/BENCHMARKS.md
    python bench/ablation.py --arms global,inst --seeds 0 --steps 20 --samples 200 --out runs/abl-smoke
    python bench/ablation.py --benchmark ablation-scene --arms global,inst --seeds 0 --steps 1000 \\
        --eval-split test --out runs/ablation-scene-dev
"""

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per run: on a shared CPU, intra-op threads mostly wait for each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from instvl.config import load_config  # noqa: E402
from instvl.log import setup_logging  # noqa: E402

log = logging.getLogger("instvl.bench.ablation")
BENCHMARKS = {"ablation": "datasets/synth-ablation", "ablation-scene": "datasets/synth-ablation-scene"}
"""`--benchmark` -> its generator preset (the benchmark's name also names its block in `--doc`);
`--samples` and `--data-seed` are the only settings changed. 'ablation': every scene a family of
look-alikes that differ in one attribute, colour included; 'ablation-scene': a family also shares its
colour and motion, so that a query's look-alikes are in its own scene."""
SHARED = ["model.text.random_config={hidden_size: 96, num_hidden_layers: 2, num_attention_heads: 4, "
          "intermediate_size: 192}", "model.text.pooling=mean", "data.batch_size=16", "optim.lr=5e-4",
          "optim.warmup_steps=20", "model.instance.crop_mask_ratio=0"]
"""Overrides of train/tiny shared by every arm. The text tower is a 2-layer BERT of width 96 trained from
scratch on the MiniLM tokenizer: MiniLM (even frozen) dominated the time of a step and of the evaluation
on CPU, and the synthetic captions use a few dozen words. Batch 16 (picked on the dev split): the same
recall per training sample as batch 4, at about a third of the CPU time per sample. Unmasked crops in
training (the paper's; train/tiny masks half of a crop's 4 tokens for speed): picked on the dev split, and
read only by arms that train on crops."""
LAMBDA_INST = 1.0
"""lambda_inst of the + L_inst arm, picked on the dev split (the paper's 0.1 is the `w01` arm): a model
trained from scratch needs the instance signal at the weight of the global one (docs/BENCHMARKS.md)."""
INST = ["model.loss.inst_loss=true", f"model.loss.w_inst={LAMBDA_INST}"]
GI = ["model.loss.inst_as_global=true", "model.loss.inst_temperature=shared"]
ARMS: dict[str, tuple[str, list[str]]] = {
    "global": ("L_rec + L_glob", ["model.loss.inst_loss=false"]),
    "inst": (f"+ L_inst (lambda {LAMBDA_INST:g})", INST),
    "gi": ("g+i (inst. captions as global, w 1)", [*GI, "model.loss.w_inst=1.0"]),
    "gi_w01": ("g+i (w 0.1)", [*GI, "model.loss.w_inst=0.1"]),
    "shared_tau": ("+ L_inst, shared tau", [*INST, "model.loss.inst_temperature=shared"]),
    "w005": ("+ L_inst, lambda 0.05", [*INST, "model.loss.w_inst=0.05"]),
    "w01": ("+ L_inst, lambda 0.1 (the paper's)", [*INST, "model.loss.w_inst=0.1"]),
    "w02": ("+ L_inst, lambda 0.2", [*INST, "model.loss.w_inst=0.2"]),
    "single_box": ("+ L_inst, single box", [*INST, "data.instance_boxes=single"]),
}
CROP_INPUT = ("data.crop_size", "data.crop_frames", "data.crop_pad", "model.instance.crop_mask_ratio")
"""Settings of the instance crops only. An arm that trains no instance branch on crops (`global`, the g+i
arms) reads them only when it is scored, so a finished run of it is re-scored, not retrained, when only
these change."""
UNCHECKED = ("run.", "eval.")
"""Config sections that do not change what a run learns (paths, logging, in-training evaluation)."""
TABLE5 = ("shared_tau", "w005", "w01", "w02", "single_box")
"""Arms that change one setting of + L_inst: also compared with it."""
COLUMNS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")
KINDS = ("global", "instance")
ERRORS = ("multi_object_confusion", "cross_sample", "duplicate_caption")
BOOTSTRAP = 2000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", default="ablation", choices=tuple(BENCHMARKS),
                        help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    parser.add_argument("--arms", default="global,inst,gi", help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps of every arm")
    parser.add_argument("--samples", type=int, default=None, help="benchmark size (default: the preset's)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated benchmark")
    parser.add_argument("--cache", default=".cache/instvl-synth", help="folder of generated benchmarks")
    parser.add_argument("--out", default="runs/ablation", help="folder of the runs")
    parser.add_argument("--eval-split", default="val",
                        help="'val' (reported) or 'test' (the dev split settings are picked on)")
    parser.add_argument("--preset", default="train/tiny", help="train preset every arm starts from")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=C", help="override for every arm")
    parser.add_argument("--json", default=None, help="write the summary here (default OUT/ablation.json)")
    parser.add_argument("--doc", default=None, help="rewrite the generated block of this markdown file")
    parser.add_argument("--report-only", action="store_true", help="only aggregate finished runs")
    return parser.parse_args()


def synth_config(args: argparse.Namespace) -> Any:
    from instvl.datasets.synth import SynthConfig

    overrides = [f"seed={args.data_seed}", "output=unused"]
    if args.samples is not None:
        overrides.append(f"num_samples={args.samples}")
    preset = BENCHMARKS[args.benchmark]
    cfg = load_config(SynthConfig, preset, overrides)
    name = preset.split("/")[-1]
    return cfg.model_copy(update={"output": str(Path(args.cache) / f"{name}-{cfg.dataset_hash()}")})


def synth_root(cfg: Any) -> Path:
    """Generate (or reuse: finished units are skipped) the benchmark; same settings, same bytes."""
    from instvl.datasets.synth import main as synth_main

    synth_main(cfg)
    return Path(cfg.output)


def overrides_for(args: argparse.Namespace, root: Path, run_dir: Path, arm: str, seed: int) -> list[str]:
    """Overrides of one (arm, seed) run, shared by its training and its evaluation."""
    return [f"data.root={root}", f"run.output_dir={run_dir}", f"optim.steps={args.steps}", f"run.seed={seed}",
            f"data.seed={seed}", "run.ckpt_every=0", "run.progress=false", "run.tensorboard=false",
            "eval.every=0", "run.log_every=50", *SHARED, *ARMS[arm][1], *args.set]  # --set wins


def trains_crops(arm: str) -> bool:
    """Whether the arm's training encodes instance crops (L_inst proper, not g+i, not global only)."""
    return not {"model.loss.inst_loss=false", "model.loss.inst_as_global=true"} & set(ARMS[arm][1])


def flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A resolved config as dotted key -> value."""
    items = cfg.model_dump(mode="json").items() if prefix == "" else cfg.items()
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def recorded(run_dir: Path) -> dict[str, Any]:
    """The resolved settings a run was trained with (its config.yaml), as dotted key -> value."""
    from instvl.train.config import TrainConfig

    return flat(load_config(TrainConfig, run_dir / "config.yaml"))


def plan_run(arm: str, done: dict[str, Any] | None, now: dict[str, Any],
             previous: dict[str, Any] | None, split: str = "val") -> str:
    """What a run folder needs, from the settings it was trained with (`done`, None: never started), those
    asked for now and its result: 'train' (no result yet), 'reuse', or 'rescore' (same training; scored
    on another split than `split`, before the within-scene score, or on other crops by an arm that trains
    none). A run trained with other settings is never reused: SystemExit."""
    if done is None:
        return "train"
    changed = sorted(k for k in done.keys() | now.keys()
                     if not k.startswith(UNCHECKED) and done.get(k) != now.get(k))
    if [k for k in changed if trains_crops(arm) or k not in CROP_INPUT]:
        raise SystemExit(f"{now.get('run.output_dir')} was trained with other settings "
                         f"({', '.join(changed)}): use another --out or delete it")
    if previous is None:
        return "train"
    scored = previous.get("scored_with", {k: done[k] for k in CROP_INPUT})
    fresh = ("within_scene" in previous and scored == {k: now[k] for k in CROP_INPUT}
             and previous.get("eval_split", "val") == split)
    return "reuse" if fresh else "rescore"


def per_query_hits(text: Any, video: Any) -> np.ndarray:
    """[6, n] 0/1: query i's correct item within the top 1/5/10, T2V then V2T (1:1 ground truth)."""
    from instvl.train.retrieval import Similarity, rank_of_first_positive

    if not text.shape[0]:
        return np.zeros((6, 0), dtype=np.uint8)
    sim = Similarity.from_embeddings(text, video)
    truth = [[i] for i in range(text.shape[0])]
    ranks = [rank_of_first_positive(s, truth).numpy() for s in (sim, sim.T)]
    return np.stack([r < k for r in ranks for k in (1, 5, 10)]).astype(np.uint8)


def run_arm(args: argparse.Namespace, root: Path, arm: str, seed: int) -> dict[str, Any]:
    """Train one arm at one seed from scratch, embed the eval split, score it; cached in result.json.

    A finished run is reused only if it was trained with the settings asked for now (else: SystemExit).
    It is re-scored from its final checkpoint (the training time kept) when its result predates the
    within-scene score or was scored on other crops (`CROP_INPUT`, for an arm that trains no crops).
    """
    from instvl.train.config import EvalConfig, TrainConfig
    from instvl.train.error_analysis import within_scene_ranks
    from instvl.train.evaluate import embed_split, eval_dataset, load_model, retrieval_report
    from instvl.train.main import main as train
    from instvl.train.model import load_tokenizer
    from instvl.train.retrieval import Similarity

    run_dir = Path(args.out) / arm / f"seed-{seed}"
    cached = run_dir / "result.json"
    previous = json.loads(cached.read_text()) if cached.exists() else None
    overrides = overrides_for(args, root, run_dir, arm, seed)
    wanted = load_config(TrainConfig, args.preset, overrides)
    now = flat(wanted)
    done = recorded(run_dir) if (run_dir / "config.yaml").exists() else None
    if plan_run(arm, done, now, previous, args.eval_split) == "reuse":
        return previous  # type: ignore[return-value]
    final = run_dir / "checkpoints" / f"step-{args.steps:07d}.pt"
    started = time.perf_counter()
    if previous is not None:
        if not final.exists():
            raise SystemExit(f"{cached} must be re-scored but {final} is gone: delete the run")
        started -= previous["train_s"]
    elif final.exists():  # trained before, evaluation unfinished: keep the weights and their training time
        started -= final.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
    else:
        train(wanted)
    trained = time.perf_counter()
    cfg = load_config(EvalConfig, args.preset, overrides + [f"checkpoint={run_dir}",
                                                            f"eval.split={args.eval_split}"])
    model = load_model(cfg, "cpu")
    emb = embed_split(model, eval_dataset(cfg, load_tokenizer(cfg.model.text), cfg.eval.split))
    report = retrieval_report(emb)
    hits = {"global": per_query_hits(emb.text, emb.video),
            "instance": per_query_hits(emb.inst_text, emb.inst_video)}
    for kind in KINDS:  # the bootstrap's per-query hits must give the report's numbers
        assert abs(hits[kind].mean() * 100 - report[kind]["mean_recall"]) < 1e-3, kind  # float32 report
    inst_sim = Similarity.from_embeddings(emb.inst_text, emb.inst_video)
    result = {"arm": arm, "seed": seed, "overrides": ARMS[arm][1], "train_s": round(trained - started, 1),
              "eval_s": round(time.perf_counter() - trained, 1), "eval_split": args.eval_split,
              "scored_with": {k: now[k] for k in CROP_INPUT},
              "report": {k: report[k] for k in ("num_samples", "num_instances", *KINDS)},
              "errors": {d: {k: report["errors"][d][k] for k in ("num_queries", "num_errors", "counts")}
                         for d in ("v2t", "t2v")},
              "within_scene": {d: within_scene_ranks(inst_sim, emb.inst_sample_ids, d).to_dict()
                               for d in ("v2t", "t2v")},
              "hits": {k: np.packbits(v, axis=1).tolist() for k, v in hits.items()},
              "num_queries": {k: int(v.shape[1]) for k, v in hits.items()}}
    cached.write_text(json.dumps(result))
    log.info("%s seed %d: global %.2f, instance %.2f, within-scene top-1 %.1f (train %.0f s)", arm, seed,
             report["global"]["mean_recall"], report["instance"]["mean_recall"],
             result["within_scene"]["v2t"]["top1"], result["train_s"])
    return result


def unpack_hits(result: dict[str, Any], kind: str) -> np.ndarray:
    packed = np.asarray(result["hits"][kind], dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=result["num_queries"][kind]).astype(np.float64)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% Student-t interval over seeds (the interval is nan with one seed)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean-recall difference a - b over the same queries ([6, n] hits each) and its 95% bootstrap interval,
    resampling queries (one draw serves all six recall columns of a query)."""
    per_query = (a - b).mean(axis=0) * 100.0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_query), size=(BOOTSTRAP, len(per_query)))
    means = per_query[draws].mean(axis=1)
    return float(per_query.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(results: list[dict[str, Any]], arms: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per arm: recall over seeds; per compared pair: paired differences over seeds and per seed."""
    by = {(r["arm"], r["seed"]): r for r in results}
    done = [s for s in seeds if all((a, s) in by for a in arms)]
    summary: dict[str, Any] = {"complete_seeds": done, "arms": {}, "pairs": {}}
    for arm in arms:
        runs = [by[arm, s] for s in done]
        entry: dict[str, Any] = {"name": ARMS[arm][0], "train_s": [r["train_s"] for r in runs]}
        for kind in KINDS:
            values = [r["report"][kind]["mean_recall"] for r in runs]
            entry[kind] = {"per_seed": values, "mean_ci": t_interval(values),
                           **{c: float(np.mean([r["report"][kind][c] for r in runs])) for c in COLUMNS}}
        for direction in ("v2t", "t2v"):
            errors = [r["errors"][direction] for r in runs]
            total = sum(e["num_errors"] for e in errors)
            entry[f"errors_{direction}"] = {
                "error_rate": 100.0 * total / max(1, sum(e["num_queries"] for e in errors)),
                **{c: 100.0 * sum(e["counts"][c] for e in errors) / max(1, total) for c in ERRORS}}
        entry["within_scene"] = {
            d: {"top1": t_interval([r["within_scene"][d]["top1"] for r in runs]),
                "chance_top1": float(np.mean([r["within_scene"][d]["chance_top1"] for r in runs])),
                "mean_rank": float(np.mean([r["within_scene"][d]["mean_rank"] for r in runs]))}
            for d in ("v2t", "t2v")}
        summary["arms"][arm] = entry
    pairs = [(arm, "global") for arm in arms if arm != "global" and "global" in arms]
    pairs += [("inst", gi) for gi in ("gi", "gi_w01") if gi in arms and "inst" in arms]
    pairs += [(arm, "inst") for arm in TABLE5 if arm in arms and "inst" in arms]
    for a, b in pairs:
        entry = {}
        for kind in KINDS:
            diffs = [by[a, s]["report"][kind]["mean_recall"] - by[b, s]["report"][kind]["mean_recall"]
                     for s in done]
            boots = [paired_bootstrap(unpack_hits(by[a, s], kind), unpack_hits(by[b, s], kind), seed=s)
                     for s in done]
            entry[kind] = {"per_seed": diffs, "mean_ci": t_interval(diffs), "bootstrap_per_seed": boots}
        summary["pairs"][f"{a} - {b}"] = entry
    summary["verdict"] = verdict(summary)
    return summary


def verdict(summary: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's goal, checked: instance +10 with a t-interval above 0, above g+i, global not fallen."""
    pairs = summary["pairs"]
    out: dict[str, bool | None] = {"instance_gain_10": None, "instance_gain_ci_excludes_0": None,
                                   "beats_gi": None, "global_not_fallen": None}
    if "inst - global" in pairs:
        mean, low, high = pairs["inst - global"]["instance"]["mean_ci"]
        out["instance_gain_10"] = mean >= 10.0
        fallen = pairs["inst - global"]["global"]["mean_ci"][2]
        out["global_not_fallen"] = None if np.isnan(fallen) else bool(fallen >= 0)
        out["instance_gain_ci_excludes_0"] = None if np.isnan(low) else bool(low > 0)
    if "inst - gi" in pairs:
        low = pairs["inst - gi"]["instance"]["mean_ci"][1]
        out["beats_gi"] = None if np.isnan(low) else bool(low > 0)
    return out


def fmt(ci: tuple[float, float, float] | list[float], sign: bool = False) -> str:
    mean, low, high = ci
    body = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    return body if np.isnan(low) else f"{body} [{low:+.2f}, {high:+.2f}]" if sign else \
        f"{body} [{low:.2f}, {high:.2f}]"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The generated block of docs/BENCHMARKS.md: command, benchmark, tables, verdict."""
    arms, counts = summary["arms"], meta["counts"]
    chance = {k: 100.0 * 16 / 3 / max(1, counts[k]) for k in KINDS}
    one = {k: 100.0 / max(1, counts[k]) for k in KINDS}
    shared = " ".join(f"`{s}`" for s in meta["shared"])
    lines = [
        "Command:", "", "```bash", meta["command"], "```", "",
        f"Benchmark: `{meta['generator']}` (generator `instvl.datasets.synth`), exactly these settings "
        f"(dataset hash `{meta['dataset_hash']}`):", "", "```yaml", meta["dataset_yaml"].rstrip(), "```", "",
        f"Evaluated split: `{meta['eval_split']}`, {counts['global']} clips, {counts['instance']} instances "
        f"(one query is {one['global']:.2f} / {one['instance']:.2f} points of a global / instance recall; "
        f"chance mean recall {chance['global']:.2f} / {chance['instance']:.2f}). "
        f"Training: `{meta['preset']}` with {shared}, {meta['steps']} steps of batch {meta['batch_size']} "
        f"per run; seeds "
        f"{summary['complete_seeds']} (model init, masks, loader order; the data are the same). "
        f"Machine: {meta['machine']}; the runs took {meta['minutes']:.0f} minutes in all (summed over runs, "
        "training plus scoring).", "",
        "Mean recall, mean over seeds [95% t-interval]; R@k columns are means over seeds.", "",
        "| arm | glob mean R | inst mean R | inst T2V R@1 | inst T2V R@5 | inst T2V R@10 "
        "| inst V2T R@1 | inst V2T R@5 | inst V2T R@10 | train s/run |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for e in arms.values():
        cols = " | ".join(f"{e['instance'][c]:.2f}" for c in COLUMNS)
        lines.append(f"| {e['name']} | {fmt(e['global']['mean_ci'])} | {fmt(e['instance']['mean_ci'])} "
                     f"| {cols} | {np.mean(e['train_s']):.0f} |")
    lines += ["", "Paired differences (same seeds): mean over seeds [95% t-interval]; per seed, the paired "
              f"bootstrap over queries (difference [95% interval], {BOOTSTRAP} resamples).", "",
              "| comparison | global mean R | instance mean R | instance, bootstrap per seed |",
              "|---|---|---|---|"]
    for pair, e in summary["pairs"].items():
        boots = "; ".join(fmt(b, sign=True) for b in e["instance"]["bootstrap_per_seed"])
        a, b = pair.split(" - ")
        lines.append(f"| {arms[a]['name']} vs {arms[b]['name']} | {fmt(e['global']['mean_ci'], True)} | "
                     f"{fmt(e['instance']['mean_ci'], True)} | {boots} |")
    lines += ["", "Instance V2T top-1 errors (all seeds pooled): error rate, and the share of errors per "
              "category (`instvl.train.error_analysis`).", "",
              "| arm | error rate | multi-object confusion | another sample | duplicate caption |",
              "|---|---|---|---|---|"]
    for e in arms.values():
        err = e["errors_v2t"]
        shares = " | ".join(f"{err[c]:.1f}%" for c in ERRORS)
        lines.append(f"| {e['name']} | {err['error_rate']:.1f}% | {shares} |")
    chance = next(iter(arms.values()))["within_scene"]["v2t"]["chance_top1"]
    lines += ["", "Within-scene rank (`instvl.train.error_analysis.within_scene_ranks`): for an instance "
              "query, the rank of its own instance among the instances of its own clip only, whatever the "
              f"other clips score (chance top-1 {chance:.1f}%: 1/k for a clip of k instances). Top-1 share, "
              "mean over seeds [95% t-interval], and the mean rank scaled to 0 (always first) .. 0.5 "
              "(chance) .. 1 (always last).", "",
              "| arm | within-scene top-1, V2T | within-scene top-1, T2V | scaled rank V2T / T2V |",
              "|---|---|---|---|"]
    for e in arms.values():
        ws = e["within_scene"]
        lines.append(f"| {e['name']} | {fmt(ws['v2t']['top1'])} | {fmt(ws['t2v']['top1'])} "
                     f"| {ws['v2t']['mean_rank']:.3f} / {ws['t2v']['mean_rank']:.3f} |")
    names = {"instance_gain_10": "instance mean recall +10 or more with L_inst",
             "instance_gain_ci_excludes_0": "its 95% interval excludes 0",
             "beats_gi": "L_inst above the g+i control (interval above 0)",
             "global_not_fallen": "global mean recall not fallen (its difference's interval reaches 0)"}
    marks = {True: "yes", False: "no", None: "n/a (arm not run, or one seed)"}
    goal = "; ".join(f"{names[k]}: {marks[ok]}" for k, ok in summary["verdict"].items())
    lines += ["", f"Goal: {goal}."]
    return "\n".join(lines)


def markers(benchmark: str) -> tuple[str, str]:
    """The begin and end lines of a benchmark's generated block."""
    return f"<!-- {benchmark}:begin (written by bench/ablation.py) -->", f"<!-- {benchmark}:end -->"


def write_doc(path: Path, block: str, benchmark: str = "ablation") -> None:
    """Replace the text between the benchmark's markers in `path` (which must hold both); the rest of the
    file, other generated blocks included, is left as it is."""
    begin, end = markers(benchmark)
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no '{begin}' ... '{end}' block to rewrite")
    head, rest = text.split(begin, 1)
    path.write_text(head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1])


def main() -> int:
    args = parse_args()
    setup_logging()
    arms, seeds = args.arms.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    started = time.perf_counter()
    synth = synth_config(args)
    root = Path(synth.output) if args.report_only else synth_root(synth)
    results = []
    for seed in seeds:  # seed-major: an interrupted sweep leaves whole seeds
        for arm in arms:
            cached = Path(args.out) / arm / f"seed-{seed}" / "result.json"
            if args.report_only:
                if cached.exists():
                    results.append(json.loads(cached.read_text()))
            else:
                results.append(run_arm(args, root, arm, seed))
    if not results:
        raise SystemExit("no finished runs")
    summary = summarize(results, arms, seeds)
    from instvl.config import to_yaml
    from instvl.train.config import TrainConfig

    base = load_config(TrainConfig, args.preset, [*SHARED, *args.set])
    flags = [f"--benchmark {args.benchmark}"] if args.benchmark != "ablation" else []
    flags += [f"--arms {args.arms}", f"--seeds {args.seeds}", f"--steps {args.steps}"]
    flags += [f"--samples {args.samples}"] if args.samples else []
    flags += [f"--eval-split {args.eval_split}", f"--out {args.out}", *(f"--set {s}" for s in args.set)]
    meta = {"command": "python bench/ablation.py " + " ".join(flags), "generator": BENCHMARKS[args.benchmark],
            "dataset_hash": synth.dataset_hash(),
            "dataset_yaml": to_yaml(synth.model_copy(update={"output": "(cache)"})),
            "eval_split": args.eval_split, "preset": args.preset, "shared": SHARED + args.set,
            "steps": args.steps, "batch_size": base.data.batch_size,
            "counts": {k: results[0]["num_queries"][k] for k in KINDS},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                       f"Python {platform.python_version()}",
            "minutes": sum(r["train_s"] + r["eval_s"] for r in results) / 60,
            "wall_minutes_this_call": (time.perf_counter() - started) / 60}
    block = markdown(summary, meta)
    out = Path(args.json or Path(args.out) / "ablation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary,
                               "runs": [{k: v for k, v in r.items() if k != "hits"} for r in results]},
                              indent=2, default=str))
    if args.doc:
        write_doc(Path(args.doc), block, args.benchmark)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
