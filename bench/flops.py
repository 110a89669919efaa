"""FLOPs per training sample of each InstAP preset and instance-branch setting, one row per media type.

Counted by torch's FlopCounterMode on meta tensors (`instvl.train.flops.step_flops`): forward + backward
of one step, the frozen teacher forward only, recomputation not counted, captions at their longest
(global: model.text.max_len; instance: data.instance_text_len). Instances per sample: what training
keeps of that media type (data.max_instances; images: data.max_instances_image when set). "ratio" is
the whole step over the same step without the instance branch (target: <= 1.5).

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
TARGETED = ("train/vit-b16", "train/vit-l14")
"""Presets held to the target (tiny is a CPU test model: its text tower dwarfs its 96-wide ViT)."""
TARGET = 1.5
BOTH, IMAGE = ("video", "image"), ("image",)
UNCAPPED = ["data.max_instances_image=null", "data.instance_text_len=null"]
"""The instance-branch settings before the image cap and the instance text length existed."""
SETTINGS: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("paper (crops: all frames, unmasked)",
     ["data.crop_frames=null", "model.instance.crop_mask_ratio=0", *UNCAPPED], BOTH),
    ("crop_frames=4", ["data.crop_frames=4", "model.instance.crop_mask_ratio=0", *UNCAPPED], BOTH),
    ("crop_frames=4, crop mask 0.75",
     ["data.crop_frames=4", "model.instance.crop_mask_ratio=0.75", *UNCAPPED], BOTH),
    ("crop_frames=2, crop mask 0.5",
     ["data.crop_frames=2", "model.instance.crop_mask_ratio=0.5", *UNCAPPED], BOTH),
    ("crop_frames=4, crop mask 0.75, instance text 32",
     ["data.crop_frames=4", "model.instance.crop_mask_ratio=0.75", "data.max_instances_image=null",
      "data.instance_text_len=32"], BOTH),
    ("crop_frames=2, crop mask 0.5, instance text 32",
     ["data.crop_frames=2", "model.instance.crop_mask_ratio=0.5", "data.max_instances_image=null",
      "data.instance_text_len=32"], ("video",)),
    ("preset crops, instance text 24, 3 per image",
     ["data.instance_text_len=24", "data.max_instances_image=3"], IMAGE),
    *[(f"preset crops, instance text 32, {n} per image",
       ["data.instance_text_len=32", f"data.max_instances_image={n}"], IMAGE) for n in (2, 3, 4)],
    ("preset", [], BOTH),
]


def measure(preset: str, overrides: list[str], media: str, instances: int | None) -> dict[str, float]:
    cfg = load_config(TrainConfig, preset, overrides)
    counts = step_flops(cfg, media, instances)  # type: ignore[arg-type]
    text_len = cfg.data.instance_text_len or cfg.model.text.max_len
    inst = cfg.data.instance_cap(media, train=True) if instances is None else instances
    return {**counts, "instances": inst, "instance_text_len": text_len}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append",
                        help="preset(s) to count (default: all three; tiny with the paper and preset rows)")
    parser.add_argument("--instances", type=int, default=None,
                        help="instances per sample (default: what the setting keeps per media type)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    results = []
    print("| preset | setting | media | instances | instance text tokens | TFLOP/sample | global-only | "
          "instance branch | ratio | <= 1.5 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.preset or PRESETS:
        for name, overrides, media_types in SETTINGS:
            if preset not in TARGETED and name not in ("paper (crops: all frames, unmasked)", "preset"):
                continue
            for media in media_types:
                started = time.perf_counter()
                row = measure(preset, overrides, media, args.instances)
                met = "-" if preset not in TARGETED else "met" if row["ratio"] <= TARGET else "not met"
                print(f"| {preset} | {name} | {media} | {row['instances']} | {row['instance_text_len']} | "
                      f"{row['total'] / 1e12:.3f} | {row['global_only'] / 1e12:.3f} | "
                      f"{row['instance_branch'] / 1e12:.3f} | {row['ratio']:.3f} | {met} |", flush=True)
                results.append({"preset": preset, "setting": name, "media": media, "overrides": overrides,
                                **row, "seconds": time.perf_counter() - started})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
