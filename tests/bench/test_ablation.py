"""bench/ablation.py: its arms are real config switches, its statistics and its markdown block."""

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instvl.config import load_config
from instvl.datasets.synth import SynthConfig, draw_scene
from instvl.train.config import TrainConfig

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "ablation.py"


@pytest.fixture(scope="module")
def ablation() -> Any:
    spec = importlib.util.spec_from_file_location("bench_ablation", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ablation"] = module
    spec.loader.exec_module(module)
    return module


def test_every_arm_is_a_valid_train_config(ablation) -> None:
    for arm, (_, overrides) in ablation.ARMS.items():
        cfg = load_config(TrainConfig, "train/tiny", [*ablation.SHARED, *overrides])
        assert cfg.model.text.random_config is not None, arm
    gi = load_config(TrainConfig, "train/tiny", ablation.ARMS["gi"][1])
    assert gi.model.loss.inst_as_global and gi.model.loss.inst_loss


def test_the_benchmark_scenes_are_families_of_look_alikes() -> None:
    cfg = load_config(SynthConfig, "datasets/synth-ablation", ["output=unused"])
    multi = 0
    for index in range(20):
        scene = draw_scene(cfg, index).scene
        looks = [o.looks for o in scene.objects]
        multi += len(looks) >= 2
        # Every object after the first differs from an earlier one in exactly one attribute.
        for k in range(1, len(looks)):
            assert min(sum(a != b for a, b in zip(looks[k], looks[j], strict=True)) for j in range(k)) == 1
    assert multi >= 15 and scene.num_frames > 1


def test_the_scene_benchmark_shares_colour_and_motion_within_a_scene(ablation) -> None:
    cfg = load_config(SynthConfig, ablation.BENCHMARKS["ablation-scene"], ["output=unused"])
    families = set()
    for index in range(20):
        objects = draw_scene(cfg, index).scene.objects
        assert len({(o.colour, o.motion, o.direction, o.speed, o.displacement) for o in objects}) == 1
        for k in range(1, len(objects)):
            assert min(sum(a != b for a, b in zip(objects[k].looks, objects[j].looks, strict=True))
                       for j in range(k)) == 1
        families.add((objects[0].colour, objects[0].motion, objects[0].direction))
    assert len(families) >= 10  # colour and motion tell scenes apart


def test_the_benchmark_flag_picks_the_generator_preset(ablation, tmp_path) -> None:
    import argparse

    def cfg(benchmark: str) -> Any:
        args = argparse.Namespace(benchmark=benchmark, data_seed=0, samples=None, cache=str(tmp_path))
        return ablation.synth_config(args)

    first, scene = cfg("ablation"), cfg("ablation-scene")
    assert first.dataset_hash() == "1856c3bbc1095bb9"  # the committed table's benchmark
    assert scene.family_motion and scene.caption_background and "colour" not in scene.confuser_attributes
    assert Path(scene.output).name == f"synth-ablation-scene-{scene.dataset_hash()}"
    assert ablation.markers("ablation")[1] == "<!-- ablation:end -->"


def fake_result(arm: str, seed: int, shift: float, n: int = 40) -> dict[str, Any]:
    rng = np.random.default_rng([seed, len(arm)])
    result: dict[str, Any] = {"arm": arm, "seed": seed, "train_s": 1.0, "eval_s": 1.0, "report": {},
                              "hits": {}, "num_queries": {}, "errors": {}}
    for kind in ("global", "instance"):
        hits = (rng.random((6, n)) < 0.3 + shift).astype(np.uint8)
        result["hits"][kind] = np.packbits(hits, axis=1).tolist()
        result["num_queries"][kind] = n
        means = hits.mean(axis=1) * 100
        columns = dict(zip(("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10"), means.tolist(),
                           strict=True))
        result["report"][kind] = {**columns, "mean_recall": float(means.mean())}
    counts = {"multi_object_confusion": 3, "cross_sample": 5, "duplicate_caption": 0}
    result["errors"] = {d: {"num_queries": n, "num_errors": 8, "counts": counts} for d in ("v2t", "t2v")}
    result["within_scene"] = {d: {"direction": d, "num_queries": n, "top1": 40.0 + 100 * shift + seed,
                                  "chance_top1": 31.25, "mean_rank": 0.4} for d in ("v2t", "t2v")}
    return result


def test_summary_intervals_bootstrap_and_doc_block(ablation, tmp_path) -> None:
    arms, seeds = ["global", "inst", "gi"], [0, 1, 2]
    shifts = {"global": 0.0, "inst": 0.4, "gi": 0.0}
    results = [fake_result(a, s, shifts[a]) for s in seeds for a in arms]
    for r in results:  # unpacking gives the packed hits back
        assert ablation.unpack_hits(r, "instance").shape == (6, 40)
    summary = ablation.summarize(results, arms, seeds)
    gain = summary["pairs"]["inst - global"]["instance"]
    mean, low, high = gain["mean_ci"]
    assert low < mean < high and low > 0 and all(b[1] > 0 for b in gain["bootstrap_per_seed"])
    assert summary["verdict"]["instance_gain_ci_excludes_0"] and summary["verdict"]["beats_gi"]
    same = ablation.unpack_hits(results[0], "global")
    assert ablation.paired_bootstrap(same, same) == (0.0, 0.0, 0.0)
    assert ablation.t_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - 2.4841, 2.0 + 2.4841), abs=1e-3)
    meta = {"command": "python bench/ablation.py", "generator": "datasets/synth-ablation-scene",
            "dataset_hash": "h", "dataset_yaml": "seed: 0\n",
            "eval_split": "val", "preset": "train/tiny", "shared": [], "steps": 1, "batch_size": 4,
            "counts": {"global": 40, "instance": 40}, "machine": "m", "minutes": 1.0}
    block = ablation.markdown(summary, meta)
    inst = ablation.ARMS["inst"][0]
    assert f"| {inst} |" in block and "multi-object confusion" in block and "37.5%" in block
    assert "chance top-1 31.2%" in block and f"| {inst} | 81.00 [" in block
    assert "Benchmark: `datasets/synth-ablation-scene`" in block
    # Each benchmark rewrites its own block only.
    (first_begin, first_end), (scene_begin, scene_end) = map(ablation.markers, ablation.BENCHMARKS)
    doc = tmp_path / "doc.md"
    doc.write_text(f"head\n{first_begin}\nfirst\n{first_end}\nmiddle\n{scene_begin}\nold\n{scene_end}\ntail\n")
    ablation.write_doc(doc, block, "ablation-scene")
    text = doc.read_text()
    assert "old" not in text and block in text and text.startswith("head") and text.endswith("tail\n")
    assert f"{first_begin}\nfirst\n{first_end}\nmiddle\n" in text
    only_first = tmp_path / "first.md"
    only_first.write_text(f"{first_begin}\nfirst\n{first_end}\n")
    with pytest.raises(SystemExit, match="ablation-scene:begin"):
        ablation.write_doc(only_first, block, "ablation-scene")


def test_only_arms_without_crop_training_may_be_rescored_on_other_crops(ablation) -> None:
    assert [arm for arm in ablation.ARMS if not ablation.trains_crops(arm)] == ["global", "gi", "gi_w01"]
    cfg = load_config(TrainConfig, "train/tiny", ["data.crop_size=48"])
    flat = ablation.flat(cfg)
    assert flat["data.crop_size"] == 48 and flat["model.loss.w_inst"] == cfg.model.loss.w_inst
    assert all(key in flat for key in ablation.CROP_INPUT)


def test_a_run_trained_with_other_settings_is_never_reused(ablation, tmp_path) -> None:
    from instvl.config import to_yaml

    def settings(*overrides: str) -> dict[str, Any]:
        return ablation.flat(load_config(TrainConfig, "train/tiny", list(overrides)))

    run = tmp_path / "inst" / "seed-0"
    run.mkdir(parents=True)
    trained = load_config(TrainConfig, "train/tiny", ["model.loss.w_inst=0.1"])
    (run / "config.yaml").write_text(to_yaml(trained))
    done = ablation.recorded(run)
    scored = {"within_scene": {}}
    assert ablation.plan_run("inst", None, settings(), None) == "train"
    assert ablation.plan_run("inst", done, settings("model.loss.w_inst=0.1", "run.output_dir=x"), scored) \
        == "reuse"
    assert ablation.plan_run("inst", done, settings("model.loss.w_inst=0.1"), {}) == "rescore"
    with pytest.raises(SystemExit, match="model.loss.w_inst"):
        ablation.plan_run("inst", done, settings("model.loss.w_inst=1.0"), scored)
    with pytest.raises(SystemExit, match="data.crop_size"):  # inst trains on its crops
        ablation.plan_run("inst", done, settings("model.loss.w_inst=0.1", "data.crop_size=48"), scored)
    # global trains no crops: other crops only mean scoring it again, once.
    other_crops = settings("model.loss.w_inst=0.1", "data.crop_size=48")
    assert ablation.plan_run("global", done, other_crops, scored) == "rescore"
    rescored = {**scored, "scored_with": {k: other_crops[k] for k in ablation.CROP_INPUT}}
    assert ablation.plan_run("global", done, other_crops, rescored) == "reuse"
    with pytest.raises(SystemExit, match="optim.steps"):
        ablation.plan_run("global", done, settings("model.loss.w_inst=0.1", "optim.steps=7"), scored)
    # A result scored on the dev split is scored again, not reused, when val is asked for.
    on_dev = {**scored, "eval_split": "test"}
    assert ablation.plan_run("inst", done, settings("model.loss.w_inst=0.1"), on_dev, "test") == "reuse"
    assert ablation.plan_run("inst", done, settings("model.loss.w_inst=0.1"), on_dev, "val") == "rescore"


def test_set_overrides_the_arm_for_dev_sweeps(ablation, tmp_path) -> None:
    import argparse

    args = argparse.Namespace(steps=10, set=["model.loss.w_inst=2.0"])
    overrides = ablation.overrides_for(args, tmp_path, tmp_path / "run", "inst", 0)
    assert load_config(TrainConfig, "train/tiny", overrides).model.loss.w_inst == 2.0
    args.set = []
    overrides = ablation.overrides_for(args, tmp_path, tmp_path / "run", "inst", 0)
    assert load_config(TrainConfig, "train/tiny", overrides).model.loss.w_inst == ablation.LAMBDA_INST
