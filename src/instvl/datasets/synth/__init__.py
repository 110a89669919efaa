"""InstVL-Synth: a procedural benchmark of videos and images of moving objects over real photos.

Each sample shows several objects (shape, colour, texture, size, motion) with ground-truth
trajectories, a global caption and one caption per instance. The object kinds recur across scenes and
objects of one scene often differ in a single attribute, so instance retrieval needs grounding.
Output: InstVL shards, or raw MP4/JPEG files plus ground_truth.jsonl for the annotation pipeline.

    instvl datasets synth out/synth --num-samples 8
    instvl datasets synth out/raw --num-samples 8 --format raw --set occlusion=true
    instvl datasets synth out/bench --config datasets/synth-bench
"""

from instvl.datasets.synth.config import SynthConfig
from instvl.datasets.synth.generate import draw_scene, generate_sample, sample_id
from instvl.datasets.synth.writer import GROUND_TRUTH, SynthSummary, generate, main, units

__all__ = ["GROUND_TRUTH", "SynthConfig", "SynthSummary", "draw_scene", "generate", "generate_sample", "main",
           "sample_id", "units"]
