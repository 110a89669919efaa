"""FLOPs per training sample of each InstAP preset and crop-branch setting, images and videos apart.

Counted by torch's FlopCounterMode on meta tensors (`instvl.train.flops.step_flops`): forward + backward
of one step with 8 instances per sample, the frozen teacher forward only, recomputation not counted.
"ratio" is the whole step over the same step without the instance branch (target: <= 1.5).

    python bench/flops.py                        # every preset x setting, markdown table
    python bench/flops.py --preset train/vit-b16 --json flops.json
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from instvl.config import load_config  # noqa: E402
from instvl.train.config import TrainConfig  # noqa: E402
from instvl.train.flops import step_flops  # noqa: E402

PRESETS = ("train/tiny", "train/vit-b16", "train/vit-l14")
SETTINGS = {
    "paper (crops: all frames, unmasked)": ["data.crop_frames=null", "model.instance.crop_mask_ratio=0"],
    "crop_frames=4": ["data.crop_frames=4", "model.instance.crop_mask_ratio=0"],
    "crop_frames=4, crop mask 0.5": ["data.crop_frames=4", "model.instance.crop_mask_ratio=0.5"],
    "crop_frames=4, crop mask 0.75": ["data.crop_frames=4", "model.instance.crop_mask_ratio=0.75"],
    "crop_frames=2, crop mask 0.5": ["data.crop_frames=2", "model.instance.crop_mask_ratio=0.5"],
    "preset": [],
}


def measure(preset: str, overrides: list[str], instances: int | None) -> dict[str, dict[str, float]]:
    cfg = load_config(TrainConfig, preset, overrides)
    return {media: step_flops(cfg, media, instances) for media in ("video", "image")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="preset(s) to count (default: all three)")
    parser.add_argument("--instances", type=int, default=None,
                        help="instances per sample (default: the preset's max_instances)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    results = []
    print("| preset | setting | video TFLOP/sample | video global-only | video ratio | image TFLOP/sample | "
          "image global-only | image ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.preset or PRESETS:
        for name, overrides in SETTINGS.items():
            if preset == "train/tiny" and "crop_frames=" in name and "=2" not in name:
                continue  # tiny clips have 4 frames in tubelets of 2
            started = time.perf_counter()
            counts = measure(preset, overrides, args.instances)
            v, i = counts["video"], counts["image"]
            print(f"| {preset} | {name} | {v['total'] / 1e12:.3f} | {v['global_only'] / 1e12:.3f} | "
                  f"{v['ratio']:.2f} | {i['total'] / 1e12:.3f} | {i['global_only'] / 1e12:.3f} | "
                  f"{i['ratio']:.2f} |", flush=True)
            results.append({"preset": preset, "setting": name, "overrides": overrides, **counts,
                            "seconds": time.perf_counter() - started})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
