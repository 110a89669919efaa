"""InstVL-Synth: determinism, ground truth that matches the pixels, captions, shards, raw media, resume."""

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from instvl.cli import main as cli_main
from instvl.config import ConfigError, load_config
from instvl.datasets.manifest import list_shards, read_manifest
from instvl.datasets.reader import read_table
from instvl.datasets.records import Sample
from instvl.datasets.schema import SCHEMA, SPLITS
from instvl.datasets.synth import GROUND_TRUTH, SynthConfig, draw_scene, generate, generate_sample
from instvl.datasets.synth.captions import instance_caption
from instvl.datasets.synth.render import SHADE, render, tracks
from instvl.datasets.synth.scene import COLOURS, SHAPES, Scene, SceneObject

# pycocotools' decode trips numpy 2's __array__ copy deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = {"width": [48, 64], "height": [48, 64], "num_frames": [6, 8], "max_objects": 3}


@pytest.fixture
def synth_config(tmp_path: Path) -> Callable[..., SynthConfig]:
    """Factory: a small SynthConfig writing under tmp_path (keyword arguments override fields)."""

    def make(**fields) -> SynthConfig:
        values = {"output": str(tmp_path / "out"), "num_samples": 4, "samples_per_shard": 2, **SMALL,
                  **fields}
        return SynthConfig(**values)

    return make


def decode_frames(sample: Sample) -> np.ndarray:
    """(T, H, W, 3) RGB frames of an embedded MP4 or JPEG."""
    if sample.media_format == "jpeg":
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(sample.media)).convert("RGB"))[None]
    import av

    with av.open(io.BytesIO(sample.media)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_mask(rle: str, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": [height, width], "counts": rle.encode()}).astype(bool)


def nearest_colour_names(pixels: np.ndarray) -> np.ndarray:
    """Name of the palette colour (or its texture shade) nearest to each (N, 3) pixel."""
    names = list(COLOURS) * 2
    palette = np.array([*COLOURS.values()] + [np.array(c) * SHADE for c in COLOURS.values()], np.float32)
    distances = np.linalg.norm(pixels[:, None, :].astype(np.float32) - palette[None], axis=2)
    return np.array(names)[distances.argmin(axis=1)]


def test_presets_load_and_bad_values_are_refused() -> None:
    tiny = load_config(SynthConfig, "datasets/synth-tiny")
    bench = load_config(SynthConfig, "datasets/synth-bench")
    assert tiny.num_samples < 50 and bench.num_samples >= 1000 and bench.num_frames == 16
    with pytest.raises(ConfigError, match="min_objects"):
        load_config(SynthConfig, "datasets/synth-tiny", ["min_objects=5", "max_objects=2"])
    with pytest.raises(ConfigError, match="width"):
        load_config(SynthConfig, "datasets/synth-tiny", ["width=[96, 64]"])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(SynthConfig, "datasets/synth-tiny", ["val_fraction=0.7", "test_fraction=0.6"])


def test_same_seed_same_sample_and_sample_k_independent_of_the_others(synth_config) -> None:
    cfg = synth_config(image_fraction=0.5, masks=True, occlusion=True)
    first, again = generate_sample(cfg, 3), generate_sample(cfg, 3)
    assert first.to_row() == again.to_row()
    larger = synth_config(image_fraction=0.5, masks=True, occlusion=True, num_samples=500)
    larger_run = generate_sample(larger, 3)
    assert larger_run.media == first.media and larger_run.global_caption == first.global_caption
    other_seed = generate_sample(synth_config(image_fraction=0.5, masks=True, occlusion=True, seed=1), 3)
    assert other_seed.media != first.media and other_seed.sample_id != first.sample_id
    assert generate_sample(cfg, 2).media != first.media


def test_ground_truth_is_well_formed_and_captions_distinguish_instances(synth_config) -> None:
    cfg = synth_config(occlusion=True, masks=True, image_fraction=0.3, max_objects=4, num_samples=12)
    for index in range(cfg.num_samples):
        sample = generate_sample(cfg, index)
        assert sample.split in SPLITS and sample.global_caption and sample.width % 2 == 0
        assert [inst.instance_id for inst in sample.instances] == list(range(len(sample.instances)))
        captions = [inst.caption for inst in sample.instances]
        assert len(set(captions)) == len(captions) and all(captions)
        for inst in sample.instances:
            traj = inst.trajectory
            assert inst.phrase in SHAPES and inst.phrase in inst.caption
            assert np.all(np.diff(traj.frame_index) > 0) and traj.frame_index[0] >= 0
            assert traj.frame_index[-1] < sample.num_frames
            boxes = traj.boxes_array()
            assert len(boxes) == len(traj.frame_index) == len(traj.score) == len(traj.mask_rle)
            assert np.all((boxes >= 0) & (boxes <= 1))
            assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])


def test_boxes_and_masks_match_the_decoded_pixels(synth_config) -> None:
    cfg = synth_config(masks=True, image_fraction=0.5, backgrounds="skimage", num_samples=6)
    for index in range(cfg.num_samples):
        drawn, sample = draw_scene(cfg, index), generate_sample(cfg, index)
        frames = decode_frames(sample)
        assert frames.shape == (sample.num_frames, sample.height, sample.width, 3)
        for inst, k in zip(sample.instances, drawn.visible, strict=True):
            colour = drawn.scene.objects[k].colour
            for t, box, rle in zip(inst.trajectory.frame_index, inst.trajectory.box, inst.trajectory.mask_rle,
                                   strict=True):
                mask = decode_mask(rle, sample.height, sample.width)
                ys, xs = np.nonzero(mask)
                expected = [xs.min() / sample.width, ys.min() / sample.height,
                            (xs.max() + 1) / sample.width, (ys.max() + 1) / sample.height]
                np.testing.assert_allclose(box, expected, atol=1e-6)
                names = nearest_colour_names(frames[t][mask])
                assert np.mean(names == colour) > 0.7, (sample.sample_id, inst.caption, t)


def test_confusers_differ_in_one_attribute_and_kinds_recur_across_scenes(synth_config) -> None:
    cfg = synth_config(confuser_fraction=1.0, min_objects=2, max_objects=2, width=96, height=96,
                       num_samples=10)
    phrases = []
    for index in range(cfg.num_samples):
        first, second = draw_scene(cfg, index).scene.objects
        assert sum(a != b for a, b in zip(first.looks, second.looks, strict=True)) == 1
        phrases += [first.shape, second.shape]
    assert len(set(phrases)) < len(phrases)


def test_scene_families_keep_colour_and_motion_and_captions_may_name_the_background(synth_config) -> None:
    cfg = synth_config(confuser_fraction=1.0, min_objects=3, max_objects=3, width=96, height=96,
                       image_fraction=0.0, num_samples=12, confuser_attributes=["size", "shape", "texture"],
                       family_motion=True)
    assert cfg.confuser_attributes == ("shape", "texture", "size")  # one order: one hash, same scenes
    changed, moving = set(), 0
    for index in range(cfg.num_samples):
        objects = draw_scene(cfg, index).scene.objects
        assert len({o.colour for o in objects}) == 1
        assert len({(o.motion, o.direction, o.speed, o.displacement) for o in objects}) == 1
        moving += objects[0].motion != "still"
        for k in range(1, len(objects)):
            changed |= {a for a, x, y in zip(("shape", "colour", "texture", "size"), objects[0].looks,
                                             objects[k].looks, strict=True) if x != y}
    assert changed == {"shape", "texture", "size"} and moving >= 6
    named = synth_config(caption_background=True, backgrounds="plain", image_fraction=0.0)
    captions = [inst.caption for inst in generate_sample(named, 0).instances]
    assert captions and all(" over a plain grey background " in c for c in captions)
    # The defaults draw the same scenes, and hash the same, as before the settings existed.
    default = synth_config()
    explicit = synth_config(confuser_attributes=["colour", "shape", "size", "texture"])
    later = {"confuser_attributes", "family_motion", "caption_background"}
    assert not later & default.dataset_config().keys()
    assert all(" over " not in inst.caption for inst in generate_sample(default, 0).instances)
    assert explicit.dataset_hash() == default.dataset_hash()
    assert draw_scene(explicit, 3).scene == draw_scene(default, 3).scene
    assert synth_config(family_motion=True, confuser_fraction=0.0).dataset_hash() != default.dataset_hash()
    with pytest.raises(ValueError, match="no attribute left"):
        synth_config(confuser_attributes=["colour"], same_colour_confusers=True)
    with pytest.raises(ValueError, match="fewer than max_objects"):
        synth_config(confuser_attributes=["size"], confuser_fraction=1.0, max_objects=4)
    with pytest.raises(ValueError, match="repeated"):
        synth_config(confuser_attributes=["size", "size"])


def test_existing_presets_keep_their_dataset_hash() -> None:
    hashes = {name: load_config(SynthConfig, f"datasets/{name}", ["output=unused"]).dataset_hash()
              for name in ("synth-ablation", "synth-bench", "synth-tiny", "synth-tracking")}
    assert hashes == {"synth-ablation": "1856c3bbc1095bb9", "synth-bench": "dbc754564cb71cda",
                      "synth-tiny": "2681e9bd57c46bee", "synth-tracking": "7fe5e3d6a715f910"}


def test_hidden_and_out_of_frame_frames_are_absent_from_the_track() -> None:
    # A large still square in front; a small circle passes behind it, then leaves the frame to the right.
    front = SceneObject("square", "red", "plain", "large", side=24, start=(30.0, 32.0))
    behind = SceneObject("circle", "blue", "plain", "small", side=8, motion="linear",
                         direction="to the right", speed="quickly", start=(4.0, 32.0),
                         displacement=(76.0, 0.0))
    scene = Scene(64, 64, 20, "plain", (front, behind), draw_order=(1, 0))
    rendered = render(scene, np.zeros((64, 64, 3), np.uint8))
    square_track, circle_track = tracks(rendered.labels, 2)
    assert square_track.frame_index == list(range(20))
    hidden = sorted(set(range(20)) - set(circle_track.frame_index))
    assert hidden and 0 in circle_track.frame_index and 19 not in circle_track.frame_index
    for t in hidden:
        assert not np.any(rendered.labels[t] == 1)
    assert "leaving the frame" in instance_caption(scene, [square_track, circle_track], 1)


def test_instance_caption_names_looks_motion_place_and_a_unique_neighbour() -> None:
    triangle = SceneObject("triangle", "red", "striped", "large", side=20, motion="linear",
                           direction="to the left", speed="slowly", start=(40.0, 12.0),
                           displacement=(-10.0, 0.0))
    circle = SceneObject("circle", "blue", "plain", "small", side=8, start=(56.0, 12.0))
    square = SceneObject("square", "blue", "dotted", "small", side=8, start=(56.0, 54.0))
    scene = Scene(64, 64, 8, "plain", (triangle, circle, square), draw_order=(0, 1, 2))
    found = tracks(render(scene, np.zeros((64, 64, 3), np.uint8)).labels, 3)
    assert instance_caption(scene, found, 0) == (
        "a large red striped triangle near the top moving slowly to the left, left of a blue circle")
    assert instance_caption(scene, found, 2) == (
        "a small blue dotted square near the bottom right standing still, below a blue circle")
    assert instance_caption(scene, found, 2, background=True) == ("a small blue dotted square over a plain "
                                                                  "grey background near the bottom right "
                                                                  "standing still, below a blue circle")


def test_shards_are_written_readable_and_consistent(synth_config) -> None:
    cfg = synth_config(num_samples=5, samples_per_shard=2, val_fraction=0.4, test_fraction=0.2)
    summary = generate(cfg)
    assert (summary.units_written, summary.samples_written) == (3, 5)
    shards = list_shards(cfg.output)
    assert len(shards) == 3
    for path in shards:
        assert pq.read_schema(path).remove_metadata().equals(SCHEMA)
    table = read_table(cfg.output)
    assert table.column("sample_id").to_pylist() == [f"synth-0-{i:07d}" for i in range(5)]
    assert read_manifest(cfg.output)["num_rows"] == 5
    stats = json.loads((Path(cfg.output) / "stats" / "shard-00000.stats.json").read_text())
    for row in table.to_pylist():
        sample = Sample.from_row(row)
        assert sample.config_hash == stats["config_hash"] and sample.models == {"generator": "instvl-synth"}
        again = generate_sample(cfg, int(sample.sample_id[-7:]))
        assert sample.to_row()["instances"] == again.to_row()["instances"]


def test_rerun_skips_done_units_and_rewrites_missing_ones_identically(synth_config) -> None:
    cfg = synth_config(num_samples=4, samples_per_shard=2)
    generate(cfg)
    shard_dir = Path(cfg.output) / "shards"
    before = {p.name: p.read_bytes() for p in shard_dir.glob("*.parquet")}
    # Simulate a run killed during the second unit: its done marker and shard are gone.
    (Path(cfg.output) / "stats" / "shard-00001.stats.json").unlink()
    (shard_dir / "shard-00001-000.parquet").unlink()
    summary = generate(cfg)
    assert (summary.units_written, summary.units_skipped) == (1, 1)
    assert {p.name: p.read_bytes() for p in shard_dir.glob("*.parquet")} == before
    with pytest.raises(ConfigError, match="shard-00000.stats.json"):
        generate(synth_config(num_samples=4, samples_per_shard=2, seed=9))


def test_raw_format_writes_decodable_media_and_ground_truth(synth_config) -> None:
    import av
    from PIL import Image

    cfg = synth_config(format="raw", image_fraction=0.5, num_samples=5, masks=True, occlusion=True)
    assert generate(cfg).samples_written == 5
    root = Path(cfg.output)
    lines = [json.loads(line) for line in (root / GROUND_TRUTH).read_text().splitlines()]
    assert [r["sample_id"] for r in lines] == [f"synth-0-{i:07d}" for i in range(5)]
    for record in lines:
        path = root / record["file"]
        if record["media_type"] == "video":
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
                assert sum(1 for _ in container.decode(video=0)) == record["num_frames"]
        else:
            assert path.suffix == ".jpg" and Image.open(path).size == (record["width"], record["height"])
        expected = generate_sample(cfg, int(record["sample_id"][-7:]))
        assert path.read_bytes() == expected.media
        assert [i["caption"] for i in record["instances"]] == [i.caption for i in expected.instances]
        assert [i["frame_index"] for i in record["instances"]] == [
            i.trajectory.frame_index for i in expected.instances]
    assert generate(cfg).units_skipped == 3


def test_split_fractions_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert cli_main(["datasets", "synth", str(out), "--num-samples", "3", "--seed", "2",
                     "--set", "val_fraction=1.0", "--set", "test_fraction=0", "--set", "width=48",
                     "--set", "height=48"]) == 0
    assert "3 samples written" in capsys.readouterr().out
    table = read_table(out, columns=["sample_id", "split", "width"])
    assert set(table.column("split").to_pylist()) == {"val"}
    assert table.column("sample_id").to_pylist()[0] == "synth-2-0000000"
    assert set(table.column("width").to_pylist()) == {48}
