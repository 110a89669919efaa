"""How many InstVL-Synth ground-truth boxes an annotate preset finds: boxes matched at IoU >= 0.5.

Generates raw InstVL-Synth media (MP4/JPEG plus ground_truth.jsonl), annotates every file with the
preset's real pipeline (`annotate_sample`: detector, trajectory builder, tracker, captioner), and on each
sampled frame matches the ground-truth boxes one-to-one (Hungarian, IoU) with the instances' boxes.
Reports matched ground-truth boxes (recall), unmatched predicted boxes, and the instance captions.

    python bench/detect_synth.py                                   # annotate/demo on 4 synth samples
    python bench/detect_synth.py --preset annotate/fake --samples 8 --seed 1
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from instvl.annotate.config import AnnotateConfig  # noqa: E402
from instvl.annotate.pipeline import Engines, annotate_sample  # noqa: E402
from instvl.config import load_config  # noqa: E402
from instvl.datasets.synth import SynthConfig, generate  # noqa: E402
from instvl.geometry import box_iou  # noqa: E402
from instvl.media.clips import decode_clip  # noqa: E402
from instvl.media.fetch import fetch_media  # noqa: E402
from instvl.media.ingest import plan_clips, probe_source  # noqa: E402

IOU = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="annotate/demo")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synth-preset", default="datasets/synth-tiny")
    parser.add_argument("--set", action="append", default=[], help="override of the annotate preset")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synth = load_config(SynthConfig, args.synth_preset, [
            f"output='{tmp}'", f"num_samples={args.samples}", f"seed={args.seed}", "format=raw"])
        generate(synth)
        truth = [json.loads(line) for line in (Path(tmp) / "ground_truth.jsonl").read_text().splitlines()]
        result = evaluate(load_config(AnnotateConfig, args.preset, args.set), Path(tmp), truth)
    result.update(preset=args.preset, samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.preset} on {args.samples} InstVL-Synth samples (seed {args.seed}): "
          f"{result['matched']}/{result['gt_boxes']} ground-truth boxes matched at IoU>={IOU} "
          f"({result['recall']:.1%}); "
          f"{result['unmatched_predictions']}/{result['predicted_boxes']} predicted "
          f"boxes matched nothing; mean IoU of matches {result['mean_iou']:.2f}")
    for caption in result["captions"][:8]:
        print("  ", caption)


def evaluate(cfg: AnnotateConfig, root: Path, truth: list[dict]) -> dict:
    engines = Engines.build(cfg)
    matched = gt_boxes = predicted = 0
    ious: list[float] = []
    captions: list[str] = []
    for record in truth:
        uri = str(root / record["file"])
        media = fetch_media(uri)
        spec = plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)[0]
        decoded = decode_clip(spec, cfg.ingest, media)
        sample = annotate_sample(decoded, engines, cfg)
        captions += [f"{inst.phrase}: {inst.caption}" for inst in sample.instances]
        for source_frame, clip_frame in zip(decoded.source_frames, decoded.clip_frames, strict=True):
            gt = [box_on(i["frame_index"], i["box"], int(source_frame)) for i in record["instances"]]
            pred = [box_on(i.trajectory.frame_index, i.trajectory.box, int(clip_frame))
                    for i in sample.instances]
            gt_arr = np.array([b for b in gt if b is not None], np.float64).reshape(-1, 4)
            pred_arr = np.array([b for b in pred if b is not None], np.float64).reshape(-1, 4)
            gt_boxes, predicted = gt_boxes + len(gt_arr), predicted + len(pred_arr)
            if len(gt_arr) and len(pred_arr):
                iou = box_iou(gt_arr, pred_arr)
                rows, cols = linear_sum_assignment(-iou)
                hits = iou[rows, cols] >= IOU
                matched += int(hits.sum())
                ious += [float(v) for v in iou[rows, cols][hits]]
    return {"gt_boxes": gt_boxes, "matched": matched, "recall": matched / max(1, gt_boxes),
            "predicted_boxes": predicted, "unmatched_predictions": predicted - matched,
            "mean_iou": float(np.mean(ious)) if ious else 0.0, "models": cfg.model_ids(),
            "captions": captions}


def box_on(frames: list[int], boxes: list, frame: int) -> list[float] | None:
    """The box at exactly `frame`, or None where the trajectory has none."""
    return next((list(b) for f, b in zip(frames, boxes, strict=True) if int(f) == frame), None)


if __name__ == "__main__":
    main()
