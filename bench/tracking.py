"""Trajectory benchmark: the builder against ground truth on hard InstVL-Synth scenes, beside a baseline.

Scenes come from the `datasets/synth-tracking` preset (occlusions, crossings, same-colour confusers,
objects entering and leaving). Detection is the ground-truth oracle, degraded: misses, box jitter, false
positives and synonym labels (`instvl.testing.oracle.OracleDetector`). Tracking is a real tracker (the
template tracker, `fake`; `--tracker` overrides its settings), so only association and track management
differ between the two systems:

- **instvl**: `TrajectoryBuilder` with the given (or `--set`) `TrajectoryConfig`.
- **gsam2**: the association of Grounded-SAM-2's continuous-id demo: re-detect every K frames, reset
  the tracker and seed it with this keyframe's detections only, inherit the id of the previous
  segment's last box with IoU above a threshold, a new id otherwise.

Scoring (every frame, box IoU >= 0.5) uses py-motmetrics for MOTA, IDF1 and ID switches, and the HOTA
of Luiten et al. (IJCV 2021) computed as TrackEval does (`hota`). Ground truth is an object's box
where at least half of it is visible; a predicted box on an object less than half visible is ignored
(neither a hit nor a false positive), as MOTChallenge does with its distractors. Drift is the share of
predicted boxes that overlap no object (IoU < 0.5 with every visible or partly visible object).

    python bench/tracking.py --seed 1 --seed 2 --seed 3 --json tracking.json    # report seeds
    python bench/tracking.py --seed 0 --set end_score=0.6 --tracker motion_prior=8  # dev seed: settings
"""

import argparse
import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from instvl.annotate.track import FakeTracker  # noqa: E402
from instvl.annotate.tracks import TrackSeed  # noqa: E402
from instvl.annotate.trajectories import TrajectoryConfig  # noqa: E402
from instvl.config import apply_override, load_config  # noqa: E402
from instvl.datasets.records import Instance  # noqa: E402
from instvl.datasets.synth import SynthConfig, draw_scene  # noqa: E402
from instvl.datasets.synth.render import sprite  # noqa: E402
from instvl.datasets.synth.scene import boxes_over_time  # noqa: E402
from instvl.deps import require  # noqa: E402
from instvl.geometry import box_iou, clip_boxes  # noqa: E402
from instvl.qa.routing import RoutingConfig, reason_code, track_problems  # noqa: E402
from instvl.testing.oracle import OracleDetector  # noqa: E402

log = logging.getLogger("instvl.bench.tracking")
SYNONYMS = {"circle": ["disc", "round shape"], "square": ["box", "block"], "triangle": ["wedge"],
            "star": ["star shape"], "ring": ["hoop", "donut"], "diamond": ["rhombus"], "cross": ["plus sign"],
            "hexagon": ["six-sided shape"]}
"""The names the degraded detector may give each synth shape (a synonym per keyframe at random)."""
MIN_VISIBLE = 0.5
"""An object is ground truth on frames where at least this share of it is visible."""
MATCH_IOU = 0.5
CHOSEN = {"backfill": True, "birth_score": 0.55, "max_unconfirmed": 3, "end_score": 0.3, "max_missed": 16}
"""Builder settings chosen on dev seeds only (16 scenes each; `--set` overrides them), beside
redetect_every (the appearance checks and stitching, chosen on seeds 0 and 4-12, and the size in the
look with stitching's threshold, chosen on seeds 0 and 4-20, are the builder's defaults); `max_missed`
and revival on 0 and 4-8, the rest on seed 0; the template tracker's defaults (`FakeTracker.Config`) on
seed 0."""


@dataclass
class Clip:
    """One benchmark scene: frames, ground truth boxes (T, N, 4; NaN: absent), partly visible boxes."""

    frames: np.ndarray
    truth: np.ndarray
    partial: np.ndarray
    phrases: list[str]
    index: int = 0
    """The scene's number within its seed (the detector's noise is drawn per seed and scene)."""


def make_clips(seed: int, count: int, preset: str = "datasets/synth-tracking") -> list[Clip]:
    """`count` scenes of the preset with `seed`; ground truth from what was drawn (occlusion included)."""
    cfg = load_config(SynthConfig, preset, [f"seed={seed}", f"num_samples={count}", "output=unused"])
    clips = []
    for index in range(count):
        drawn = draw_scene(cfg, index)
        scene, labels = drawn.scene, drawn.rendered.labels
        num_frames, height, width = labels.shape
        scale = np.array([width, height, width, height], np.float32)
        truth = np.full((num_frames, len(scene.objects), 4), np.nan, np.float32)
        partial = truth.copy()
        for k, obj in enumerate(scene.objects):
            mask = sprite(obj.shape, obj.colour, obj.texture, obj.side)[0]
            visible = (labels == k).reshape(num_frames, -1).sum(axis=1) / mask.sum()
            boxes = clip_boxes(boxes_over_time(obj, num_frames) / scale)
            truth[visible >= MIN_VISIBLE, k] = boxes[visible >= MIN_VISIBLE]
            some = (visible > 0) & (visible < MIN_VISIBLE)
            partial[some, k] = boxes[some]
        clips.append(Clip(drawn.rendered.frames, truth, partial, [o.shape for o in scene.objects], index))
    return clips


def detector_for(clip: Clip, args: argparse.Namespace, seed: int) -> OracleDetector:
    """The degraded oracle: it sees objects at least half visible."""
    return OracleDetector(clip.frames, clip.truth, clip.phrases, jitter=args.jitter, miss_rate=args.miss_rate,
                          false_positive_rate=args.fp_rate, score_spread=0.3,
                          synonyms=SYNONYMS if args.synonyms else None, seed=seed * 1000 + clip.index)


def prompt_phrases(clip: Clip, synonyms: bool) -> list[str]:
    """The detector prompt: every shape of the vocabulary and, with synonyms, their other names."""
    return [name for shape in SYNONYMS for name in ([shape] + (SYNONYMS[shape] if synonyms else []))]


def run_instvl(clip: Clip, detector: OracleDetector, cfg: TrajectoryConfig, tracker: FakeTracker,
               synonyms: bool) -> tuple[np.ndarray, list[Instance]]:
    """Predicted boxes (T, M, 4), NaN where track m has no box, and the M instances."""
    tracks = cfg.build(detector, tracker).build(iter(clip.frames), prompt_phrases(clip, synonyms))
    out = np.full((len(clip.frames), len(tracks), 4), np.nan, np.float32)
    for m, track in enumerate(tracks):
        out[track.trajectory.frame_index, m] = track.trajectory.box
    return out, tracks


def track_quality(clip: Clip, predicted: np.ndarray) -> list[float]:
    """Per predicted track, its mean box IoU over its frames with the ground-truth object it overlaps
    most (0 on frames where that object is not ground truth, partly visible counting as ground truth)."""
    truth = np.where(np.isnan(clip.truth), clip.partial, clip.truth)
    quality = []
    for m in range(predicted.shape[1]):
        frames = np.flatnonzero(~np.isnan(predicted[:, m, 0]))
        ious = np.array([box_iou(predicted[t, m][None], np.nan_to_num(truth[t], nan=-1.0))[0]
                         for t in frames])
        quality.append(float(ious.mean(axis=0).max()) if ious.size else 0.0)
    return quality


def routing_labels(clips: list[Clip], runs: list[tuple[np.ndarray, list[Instance]]],
                   routing: RoutingConfig) -> dict[str, Any]:
    """Per instance: good or bad (mean IoU with its ground-truth object < MATCH_IOU, or none), its
    scores and whether review routing (`qa.routing.track_problems`) sends it to review; routing's
    precision and recall on the bad tracks."""
    rows = []
    for c, (clip, (predicted, tracks)) in enumerate(zip(clips, runs, strict=True)):
        for track, quality in zip(tracks, track_quality(clip, predicted), strict=True):
            row: Any = {"instance_id": track.instance_id, "score": track.score,
                        "trajectory": {"frame_index": track.trajectory.frame_index,
                                       "score": track.trajectory.score}}
            reasons = track_problems(row, "video", routing)
            rows.append({"clip": c, "instance_id": track.instance_id, "iou": round(quality, 4),
                         "frames": len(track.trajectory.frame_index),
                         "bad": quality < MATCH_IOU, "score": round(track.score or 0.0, 4),
                         "min_frame_score": round(min(track.trajectory.score, default=0.0), 4),
                         "routed": [reason_code(r) for r in reasons]})
    bad = np.array([r["bad"] for r in rows], bool)
    routed = np.array([bool(r["routed"]) for r in rows], bool)
    return {"instances": rows, "bad": int(bad.sum()), "routed": int(routed.sum()),
            "precision": float((bad & routed).sum() / max(1, routed.sum())),
            "recall": float((bad & routed).sum() / max(1, bad.sum()))}


def run_gsam2(clip: Clip, detector: OracleDetector, tracker: FakeTracker, step: int, inherit_iou: float,
              synonyms: bool) -> np.ndarray:
    """Grounded-SAM-2's continuous-id association with the same detector and tracker."""
    phrases = prompt_phrases(clip, synonyms)
    num_frames = len(clip.frames)
    rows: list[dict[int, np.ndarray]] = [{} for _ in range(num_frames)]
    previous: dict[int, np.ndarray] = {}  # id -> box on the last frame of the previous segment
    next_id = 0
    for start in range(0, num_frames, step):
        window = clip.frames[start:start + step + 1]
        seeds = []
        for det in detector.detect(window[:1], phrases)[0]:
            ids = list(previous)
            iou = box_iou(np.array([det.box_xyxy]), np.array([previous[i] for i in ids]))[0] if ids else []
            best = int(np.argmax(iou)) if len(iou) else -1
            if best >= 0 and iou[best] > inherit_iou and ids[best] not in [s.obj_id for s in seeds]:
                obj_id = ids[best]
            else:
                obj_id, next_id = next_id, next_id + 1
            seeds.append(TrackSeed(obj_id, det.box_xyxy, det.phrase, det.score))
        tracked = tracker.track(window, seeds) if seeds else []
        last = min(step, len(window) - 1) if start + step < num_frames else len(window) - 1
        previous = {}
        for offset, frame in enumerate(tracked[:last + 1]):
            for obj_id, obj in frame.objects.items():
                if obj.box_xyxy is None:
                    continue
                if offset < last or start + step >= num_frames:
                    rows[start + offset][obj_id] = np.asarray(obj.box_xyxy)
                if offset == last:
                    previous[obj_id] = np.asarray(obj.box_xyxy)
    out = np.full((num_frames, next_id, 4), np.nan, np.float32)
    for t, row in enumerate(rows):
        for obj_id, box in row.items():
            out[t, obj_id] = box
    return out


def frame_pairs(clip: Clip, predicted: np.ndarray):
    """Per frame: ground-truth ids and boxes, kept predicted ids and boxes (ignored ones removed), and
    the numbers of predicted boxes that overlap no object and of all predicted boxes."""
    for t in range(len(clip.frames)):
        gt_ids = np.flatnonzero(~np.isnan(clip.truth[t, :, 0]))
        pr_ids = np.flatnonzero(~np.isnan(predicted[t, :, 0]))
        gt, pr = clip.truth[t, gt_ids], predicted[t, pr_ids]
        partial = clip.partial[t, ~np.isnan(clip.partial[t, :, 0])]
        on_truth = box_iou(pr, gt).max(axis=1) >= MATCH_IOU if len(gt) else np.zeros(len(pr), bool)
        on_partial = (box_iou(pr, partial).max(axis=1) >= MATCH_IOU if len(partial)
                      else np.zeros(len(pr), bool))
        keep = on_truth | ~on_partial
        yield gt_ids, gt, pr_ids[keep], pr[keep], int((~on_truth & ~on_partial).sum()), len(pr)


def hota(sequences: list[tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]]) -> dict[str, float]:
    """HOTA, DetA and AssA (averaged over IoU thresholds 0.05..0.95) as TrackEval computes them, summed
    over sequences; each sequence is per-frame (gt ids, predicted ids, IoU matrix)."""
    optimize = require("scipy.optimize", "annotate")
    alphas = np.arange(0.05, 0.99, 0.05)
    tp, fn, fp, ass_weighted = (np.zeros(len(alphas)) for _ in range(4))
    for gt_ids, pr_ids, sims in sequences:
        num_gt = max((int(g.max()) + 1 for g in gt_ids if len(g)), default=0)
        num_pr = max((int(p.max()) + 1 for p in pr_ids if len(p)), default=0)
        potential = np.zeros((num_gt, num_pr))
        gt_count, pr_count = np.zeros((num_gt, 1)), np.zeros((1, num_pr))
        for g, p, sim in zip(gt_ids, pr_ids, sims, strict=True):
            denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
            share = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > 0)
            potential[g[:, None], p[None, :]] += share
            gt_count[g] += 1
            pr_count[0, p] += 1
        alignment = potential / np.maximum(gt_count + pr_count - potential, 1e-12)
        matches = np.zeros((len(alphas), num_gt, num_pr))
        seq_tp = np.zeros(len(alphas))
        for g, p, sim in zip(gt_ids, pr_ids, sims, strict=True):
            if not len(g) or not len(p):
                fn += len(g)
                fp += len(p)
                continue
            rows, cols = optimize.linear_sum_assignment(-(alignment[g[:, None], p[None, :]] * sim))
            for a, alpha in enumerate(alphas):
                ok = sim[rows, cols] >= alpha - 1e-10
                seq_tp[a] += ok.sum()
                fn[a] += len(g) - ok.sum()
                fp[a] += len(p) - ok.sum()
                matches[a, g[rows[ok]], p[cols[ok]]] += 1
        for a in range(len(alphas)):
            ass = matches[a] / np.maximum(1, gt_count + pr_count - matches[a])
            ass_weighted[a] += (matches[a] * ass).sum()
        tp += seq_tp
    det_a = tp / np.maximum(1, tp + fn + fp)
    ass_a = ass_weighted / np.maximum(1, tp)
    return {"hota": float(np.mean(np.sqrt(det_a * ass_a))), "deta": float(np.mean(det_a)),
            "assa": float(np.mean(ass_a))}


def score(clips: list[Clip], predictions: list[np.ndarray]) -> dict[str, float]:
    """MOT metrics over all clips (motmetrics: MOTA, IDF1, switches; HOTA; drift; GT track count)."""
    mm = require("motmetrics", "dev")
    accumulators, sequences = [], []
    boxes = drifted = gt_tracks = 0
    for clip, predicted in zip(clips, predictions, strict=True):
        acc = mm.MOTAccumulator(auto_id=True)
        seq: tuple[list, list, list] = ([], [], [])
        for gt_ids, gt, pr_ids, pr, drift, count in frame_pairs(clip, predicted):
            iou = box_iou(gt, pr)
            acc.update(gt_ids.tolist(), pr_ids.tolist(), np.where(iou >= MATCH_IOU, 1 - iou, np.nan))
            seq[0].append(gt_ids)
            seq[1].append(pr_ids)
            seq[2].append(iou)
            drifted, boxes = drifted + drift, boxes + count
        gt_tracks += int((~np.isnan(clip.truth[:, :, 0])).any(axis=0).sum())
        accumulators.append(acc)
        sequences.append(seq)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its timings
        summary = mm.metrics.create().compute_many(
            accumulators, generate_overall=True,
            metrics=["mota", "idf1", "num_switches", "recall", "precision", "num_fragmentations"])
    overall = summary.loc["OVERALL"]
    num_tracks = sum(int((~np.isnan(p[:, :, 0])).any(axis=0).sum()) for p in predictions)
    return {"idf1": float(overall["idf1"]), "mota": float(overall["mota"]), **hota(sequences),
            "id_switches": int(overall["num_switches"]), "gt_tracks": gt_tracks,
            "switches_per_10_tracks": 10 * float(overall["num_switches"]) / max(1, gt_tracks),
            "drift": drifted / max(1, boxes), "recall": float(overall["recall"]),
            "precision": float(overall["precision"]), "fragmentations": int(overall["num_fragmentations"]),
            "pred_tracks": num_tracks, "pred_boxes": boxes}


def evaluate(clips: list[Clip], args: argparse.Namespace, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Both systems on the clips; metrics per system and the settings used."""
    data: dict[str, Any] = {"redetect_every": args.redetect_every, **CHOSEN}
    for override in overrides:
        apply_override(data, override)
    cfg = TrajectoryConfig.model_validate(data)
    tracker_data: dict[str, Any] = {}
    for override in args.tracker:
        apply_override(tracker_data, override)
    tracker = FakeTracker(FakeTracker.Config.model_validate(tracker_data))
    started = time.perf_counter()
    runs = [run_instvl(c, detector_for(c, args, seed), cfg, tracker, args.synonyms) for c in clips]
    ours = [predicted for predicted, _ in runs]
    middle = time.perf_counter()
    base = [run_gsam2(c, detector_for(c, args, seed), tracker, args.redetect_every, args.inherit_iou,
                      args.synonyms) for c in clips]
    routing_data: dict[str, Any] = {}
    for override in args.routing:
        apply_override(routing_data, override)
    routing = RoutingConfig.model_validate(routing_data)
    return {"instvl": {**score(clips, ours), "seconds": middle - started},
            "routing": {**routing_labels(clips, runs, routing), "config": routing.model_dump(mode="json")},
            "gsam2": {**score(clips, base), "seconds": time.perf_counter() - middle},
            "builder": cfg.model_dump(mode="json"), "tracker": tracker.config.model_dump(mode="json")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, action="append", help="scene and noise seed (repeatable); "
                        "seed 0 is the dev seed that settings were chosen on, report on others")
    parser.add_argument("--scenes", type=int, default=16, help="scenes per seed")
    parser.add_argument("--miss-rate", type=float, default=0.3)
    parser.add_argument("--fp-rate", type=float, default=0.1,
                        help="false boxes per keyframe as a share of the scene's objects")
    parser.add_argument("--jitter", type=float, default=0.05, help="box noise, share of the box size")
    parser.add_argument("--no-synonyms", dest="synonyms", action="store_false")
    parser.add_argument("--redetect-every", type=int, default=4, help="K: frames between detections")
    parser.add_argument("--inherit-iou", type=float, default=0.3,
                        help="baseline: IoU above which a detection inherits an id (chosen on seed 0)")
    parser.add_argument("--set", action="append", default=[], metavar="A=B", help="TrajectoryConfig override")
    parser.add_argument("--tracker", action="append", default=[], metavar="A=B",
                        help="template tracker (FakeTracker.Config) override")
    parser.add_argument("--routing", action="append", default=[], metavar="A=B",
                        help="review routing (qa.routing.RoutingConfig) override")
    parser.add_argument("--json", help="write the results to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = args.seed or [1, 2]
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "seeds": {}}
    for seed in seeds:
        results["seeds"][str(seed)] = evaluate(make_clips(seed, args.scenes), args, seed, args.set)
    table = ["| system | IDF1 | HOTA | MOTA | ID sw. / 10 GT tracks | drift | recall | tracks (GT) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, res in results["seeds"].items():
        for name in ("instvl", "gsam2"):
            m = res[name]
            table.append(f"| {name} (seed {seed}) | {m['idf1']:.3f} | {m['hota']:.3f} | {m['mota']:.3f} | "
                         f"{m['switches_per_10_tracks']:.2f} | {m['drift']:.1%} | {m['recall']:.3f} | "
                         f"{m['pred_tracks']} ({m['gt_tracks']}) |")
    table += ["", "| seed | instances | bad (IoU < 0.5) | routed | routing precision | routing recall |",
              "|---|---:|---:|---:|---:|---:|"]
    for seed, res in results["seeds"].items():
        r = res["routing"]
        table.append(f"| {seed} | {len(r['instances'])} | {r['bad']} | {r['routed']} | "
                     f"{r['precision']:.2f} | {r['recall']:.2f} |")
    print("\n".join(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
