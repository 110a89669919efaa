"""The annotation pipeline end to end: one InstVL-Synth clip through `annotate_sample` (fake and tiny real
models), `instvl annotate run` over a folder with a corrupt file, and trajectories built from synth
ground truth keeping the ground-truth identities."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.pipeline import Engines, annotate_sample
from instvl.annotate.run import main as annotate_main
from instvl.annotate.trajectories import TrajectoryConfig
from instvl.config import load_config
from instvl.datasets.reader import read_table
from instvl.datasets.records import FrameSpace, Sample
from instvl.datasets.schema import SCHEMA
from instvl.datasets.synth import SynthConfig, generate, generate_sample
from instvl.datasets.validate import validate_dataset
from instvl.deps import is_available
from instvl.geometry import box_iou
from instvl.media.clips import DecodedClip, clip_media, decode_clip, stored_size
from instvl.media.decode import decode_frames
from instvl.media.fetch import fetch_media
from instvl.media.ingest import ClipSpec, plan_clips, probe_source
from instvl.testing.oracle import OracleDetector, OracleTracker, ground_truth_from_instances


@pytest.fixture(scope="module")
def synth_media(tmp_path_factory) -> Path:
    """Raw InstVL-Synth output: 4 MP4 clips (ground truth in ground_truth.jsonl) and one JPEG beside them."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(output=str(root), format="raw", num_samples=4, width=[64, 96], height=[64, 96],
                         num_frames=[10, 14], image_fraction=0.0, seed=3))
    image = generate_sample(SynthConfig(output="unused", image_fraction=1.0, width=80, height=64), 0)
    (root / "media" / "still.jpg").write_bytes(image.media)
    return root


def ground_truth(root: Path) -> dict[str, dict]:
    """file name -> its ground_truth.jsonl record."""
    lines = (root / "ground_truth.jsonl").read_text().splitlines()
    return {Path(r["file"]).name: r for r in map(json.loads, filter(None, lines))}


def first_video(root: Path) -> str:
    return str(sorted((root / "media").glob("*.mp4"))[0])


def annotate_file(uri: str, cfg: AnnotateConfig, engines: Engines):
    media = fetch_media(uri)
    (spec,) = plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)
    decoded = decode_clip(spec, cfg.ingest, media)
    return decoded, annotate_sample(decoded, engines, cfg, clip_media(spec, cfg.ingest, media))


def check_sample(sample: Sample, decoded, cfg: AnnotateConfig) -> None:
    """What every annotated row must satisfy, whatever the models said."""
    pa.Table.from_pylist([sample.to_row()], schema=SCHEMA)  # the row fits the shard schema
    assert sample.models == cfg.model_ids() and sample.config_hash
    # the row describes the media it stores (the training rendition), not the annotation frames
    assert (sample.width, sample.height) == stored_size(decoded.spec, cfg.ingest)
    assert sample.num_frames == decoded.spec.num_frames and sample.media_format == "mp4"
    sampled = set(decoded.clip_frames.tolist())
    for k, inst in enumerate(sample.instances):
        assert inst.instance_id == k and inst.caption
        assert set(inst.trajectory.frame_index) <= sampled  # indices into the clip, not into the sample
        assert inst.trajectory.frame_index == sorted(inst.trajectory.frame_index)
        boxes = np.asarray(inst.trajectory.box)
        assert boxes.shape == (len(inst.trajectory.frame_index), 4)
        assert (boxes >= 0).all() and (boxes <= 1).all()


def test_annotate_sample_with_the_fake_preset(synth_media):
    cfg = load_config(AnnotateConfig, "annotate/fake", ["ingest.num_frames=6"])
    decoded, sample = annotate_file(first_video(synth_media), cfg, Engines.build(cfg))
    truth = ground_truth(synth_media)[Path(first_video(synth_media)).name]
    assert decoded.spec.num_frames == truth["num_frames"] and len(decoded.frames) == 6
    assert decoded.clip_frames[-1] == truth["num_frames"] - 1  # sampled frames span the clip
    assert decoded.decoder == ("decord" if is_available("decord") else "pyav")  # no silent fallback
    check_sample(sample, decoded, cfg)
    assert sample.instances and sample.global_caption
    assert {k: sample.models[k] for k in ("detector", "tracker", "captioner", "random_init")} == {
        "detector": "fake:random", "tracker": "fake:template", "captioner": "fake", "random_init": "true"}
    again = annotate_file(first_video(synth_media), cfg, Engines.build(cfg))[1]
    assert again.to_row()["instances"] == sample.to_row()["instances"]  # deterministic


def test_every_row_records_its_review_routing(synth_media):
    strict = load_config(AnnotateConfig, "annotate/fake", [
        "ingest.num_frames=6", "routing.min_caption_words=50", "routing.audit_fraction=0"])
    sample = annotate_file(first_video(synth_media), strict, Engines.build(strict))[1]
    reasons = sample.qc.route_reasons
    assert any(r.startswith("caption") or "caption" in r for r in reasons), reasons
    lenient = load_config(AnnotateConfig, "annotate/fake", [
        "ingest.num_frames=6", "routing.min_caption_words=1", "routing.audit_fraction=0",
        "routing.min_instance_score=0", "routing.min_frame_score=0", "routing.min_track_frames=1",
        "routing.max_track_gaps=100", "routing.require_phrase_in_caption=false",
        "routing.max_repeat_share=1"])
    sample = annotate_file(first_video(synth_media), lenient, Engines.build(lenient))[1]
    assert sample.qc.route_reasons == [] and sample.qc.status == "auto"


def test_annotate_sample_with_the_tiny_real_models(synth_media):
    cfg = load_config(AnnotateConfig, "annotate/tiny", [
        "ingest.num_frames=4", "filter.max_instances=2", "captioner.max_new_tokens=4",
        "trajectories.redetect_every=3", "trajectories.min_frames=1", "trajectories.keep_masks=true"])
    engines = Engines.build(cfg)
    assert type(engines.detector).__name__ == "HFDetector" and type(engines.tracker).__name__ == "HFTracker"
    decoded, sample = annotate_file(first_video(synth_media), cfg, engines)
    check_sample(sample, decoded, cfg)
    assert {k: sample.models[k] for k in ("detector", "tracker", "captioner")} == {
        "detector": "hf:tiny-random", "tracker": "hf:tiny-random", "captioner": "hf:tiny-random"}
    assert sample.models["random_init"] == sample.models["tracker.random_init"] == "true"
    assert 1 <= len(sample.instances) <= 2  # random weights still detect at threshold 0.05; the cap holds
    for inst in sample.instances:  # SAM2's masks, stored as COCO RLE, one per trajectory frame
        assert len(inst.trajectory.mask_rle) == len(inst.trajectory.frame_index)


@pytest.fixture(scope="module")
def built(synth_media, tmp_path_factory) -> tuple[Path, AnnotateConfig]:
    """`annotate run` (fake preset) over the synth clips, the JPEG and a corrupt MP4."""
    corrupt = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
    (synth_media / "media" / "zz-corrupt.mp4").write_bytes(corrupt)
    output = tmp_path_factory.mktemp("annotated") / "corpus"
    cfg = load_config(AnnotateConfig, "annotate/fake", [f"input={synth_media / 'media'}", f"output={output}",
                                                         "out.sources_per_unit=3"])
    assert annotate_main(cfg) == 0
    return output, cfg


def test_annotate_run_writes_valid_shards_and_quarantines_the_corrupt_file(built, synth_media):
    output, cfg = built
    report = validate_dataset(output, check_media=True)
    assert report.ok, report.summary()
    rows = read_table(output).to_pylist()
    truth = ground_truth(synth_media)
    assert len(rows) == len(truth) + 1
    assert sorted(r["media_type"] for r in rows) == ["image"] + ["video"] * len(truth)
    quarantine = [r for path in sorted((output / "quarantine").glob("*.parquet"))
                  for r in pq.read_table(path).to_pylist()]
    assert [Path(r["uri"]).name for r in quarantine] == ["zz-corrupt.mp4"]
    assert quarantine[0]["reason"] and quarantine[0]["stage"] in {"probe", "decode"}
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["num_rows"] == len(rows) and manifest["num_quarantined"] == 1


def test_annotate_run_rows_carry_provenance_and_clip_frame_indices(built, synth_media):
    output, cfg = built
    truth_frames = sorted([1] + [r["num_frames"] for r in ground_truth(synth_media).values()])
    rows = read_table(output).to_pylist()
    assert sorted(r["num_frames"] for r in rows) == truth_frames
    for row in rows:
        models = {kv["key"]: kv["value"] for kv in row["provenance"]["models"]}
        assert models == cfg.model_ids()
        roles = (models["detector"], models["tracker"], models["random_init"])
        assert roles == ("fake:random", "fake:template", "true")
        for inst in row["instances"]:
            assert all(0 <= i < row["num_frames"] for i in inst["trajectory"]["frame_index"])


def test_annotate_run_twice_does_no_new_work(built):
    output, cfg = built
    stats_before = {p.name: p.stat().st_mtime_ns for p in (output / "stats").iterdir()}
    assert annotate_main(cfg) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (output / "stats").iterdir()} == stats_before


def oracle_tracks(sample: Sample):
    """Trajectories of a synth sample from its decoded frames, an oracle detector and an oracle tracker."""
    decoded = decode_frames(sample.media, sample.sample_id, range(sample.num_frames), decoder="pyav")
    frames = list(decoded.frames)
    gt, phrases = ground_truth_from_instances(sample.instances, sample.num_frames)
    detector, tracker = OracleDetector(frames, gt, phrases), OracleTracker(frames, gt)
    builder = TrajectoryConfig(redetect_every=4, min_frames=1, min_area=0.0).build(detector, tracker)
    return builder.build(frames, phrases)


@pytest.mark.parametrize("index", range(4))
def test_trajectories_from_synth_ground_truth_keep_its_ids(index):
    synth = SynthConfig(output="unused", width=[96, 128], height=[80, 96], num_frames=[16, 24],
                        image_fraction=0.0, min_objects=2, max_objects=4, seed=index)
    sample = generate_sample(synth, index)
    tracks = oracle_tracks(sample)
    assert [t.instance_id for t in tracks] == [inst.instance_id for inst in sample.instances]
    for track, inst in zip(tracks, sample.instances, strict=True):  # every frame sampled: index k = frame k
        assert track.trajectory.space == FrameSpace.SAMPLED
        assert track.phrase == inst.phrase and track.trajectory.frame_index == inst.trajectory.frame_index
        np.testing.assert_allclose(track.trajectory.box, inst.trajectory.box, atol=1e-5)


def oracle_engines(detector: OracleDetector, tracker: OracleTracker,
                   phrases: list[str]) -> tuple[Engines, AnnotateConfig]:
    """The `annotate/fake` pipeline around oracle backends: every truth phrase detected, no track dropped."""
    overrides = ["phrases.source=vocabulary", "filter.max_instances=8", "trajectories.min_frames=1",
                 "trajectories.min_area=0"]
    cfg = load_config(AnnotateConfig, "annotate/fake", overrides)
    cfg = cfg.model_copy(update={"phrases": cfg.phrases.model_copy(update={"vocabulary": phrases})})
    builder = cfg.trajectories.build(detector, tracker)
    return Engines(detector, tracker, cfg.captioner.build(), builder), cfg


def test_strided_sampling_stores_the_clip_frames_the_boxes_were_seen_on():
    """Every third frame of a clip starting at source frame 10 is sampled: the builder counts sampled
    indices 0..7, the row must hold clip frames 0, 3, ..., 21, each with the box seen on that frame."""
    synth = SynthConfig(output="unused", width=96, height=80, num_frames=24, image_fraction=0.0,
                        min_objects=2, max_objects=3, seed=7)
    sample = generate_sample(synth, 0)
    truth, phrases = ground_truth_from_instances(sample.instances, sample.num_frames)  # by clip frame
    clip_frames = np.arange(0, sample.num_frames, 3)
    spec = ClipSpec("strided", "memory://clip.mp4", "video", "0" * 64, 96, 80, start_frame=10,
                    end_frame=10 + sample.num_frames, fps=24.0)
    pixels = np.zeros((len(clip_frames), 80, 96, 3), np.uint8)
    pixels[:, 0, 0, 0] = np.arange(len(clip_frames))  # the oracles tell the frames apart by their pixels
    decoded = DecodedClip(spec, clip_frames + spec.start_frame, pixels, "test")
    assert decoded.clip_frames.tolist() == clip_frames.tolist()
    sampled_truth = truth[clip_frames]  # the engines see the sampled frames only
    detector, tracker = OracleDetector(pixels, sampled_truth, phrases), OracleTracker(pixels, sampled_truth)
    sample_out = annotate_sample(decoded, *oracle_engines(detector, tracker, phrases))
    assert len(sample_out.instances) == len(sample.instances)
    for inst in sample_out.instances:
        frames = inst.trajectory.frame_index
        assert inst.trajectory.space == FrameSpace.CLIP and set(frames) <= set(clip_frames.tolist())
        assert max(frames) > len(clip_frames)  # clip frames, not the sampled indices 0..7
        seen = [n for n, phrase in enumerate(phrases) if phrase == inst.phrase
                and np.allclose(inst.trajectory.box, truth[frames, n], atol=1e-5)]
        assert seen, f"instance {inst.instance_id}: its boxes are not the truth at clip frames {frames}"


def test_dense_tracking_tracks_every_decoded_frame_and_stores_the_sampled_ones():
    """With `trajectories.track_fps` the clip holds dense frames and marks the sampled ones: the tracker
    sees every dense frame, captions and the row only the sampled ones, in clip frames."""
    synth = SynthConfig(output="unused", width=96, height=80, num_frames=24, image_fraction=0.0,
                        min_objects=2, max_objects=3, seed=7)
    sample = generate_sample(synth, 0)
    truth, phrases = ground_truth_from_instances(sample.instances, sample.num_frames)
    spec = ClipSpec("dense", "memory://clip.mp4", "video", "0" * 64, 96, 80, start_frame=0,
                    end_frame=sample.num_frames, fps=24.0)
    dense_frames = np.arange(0, 24, 2)
    stored = np.array([0, 3, 6, 9, 11])  # clip frames 0, 6, 12, 18, 22
    pixels = np.zeros((len(dense_frames), 80, 96, 3), np.uint8)
    pixels[:, 0, 0, 0] = np.arange(len(dense_frames))  # the oracles tell the frames apart by their pixels
    decoded = DecodedClip(spec, dense_frames, pixels, "test", stored=stored)
    detector, tracker = OracleDetector(pixels, truth[dense_frames], phrases), \
        OracleTracker(pixels, truth[dense_frames])
    seen: list[int] = []
    track = tracker.track
    tracker.track = lambda frames, seeds: seen.extend(int(f[0, 0, 0]) for f in frames) or track(frames, seeds)
    out = annotate_sample(decoded, *oracle_engines(detector, tracker, phrases))
    assert set(seen) == set(range(len(dense_frames)))  # tracking used every dense frame
    assert out.instances
    for inst in out.instances:
        assert set(inst.trajectory.frame_index) <= {0, 6, 12, 18, 22}  # stored: the sampled clip frames
        for frame, box in zip(inst.trajectory.frame_index, inst.trajectory.box, strict=True):
            assert np.nanmax(box_iou(np.array([box]), np.nan_to_num(truth[frame], nan=-1.0))) > 0.99


def test_a_row_stored_smaller_than_its_annotation_frames_keeps_boxes_and_masks_on_the_object(tmp_path):
    """Annotated on 160x96 frames, stored at 66x40 (`ingest.store_short_side`): the row's size is the
    stored clip's, and its boxes and masks, drawn on the stored clip at that size, cover the square."""
    from instvl.datasets.records import decode_rle
    from instvl.geometry import to_pixels
    from instvl.testing.media import moving_square, write_mp4

    source, _ = moving_square(24, 160, 96, side=32, seed=4)
    colour = source[0, 48, 16].astype(int)
    path = write_mp4(tmp_path / "square.mp4", source, fps=8, crf=18)
    on_square = lambda frame: np.abs(frame.astype(int) - colour).sum(axis=-1) < 60  # noqa: E731
    probe = load_config(AnnotateConfig, "annotate/fake", [
        "ingest.num_frames=6", "ingest.max_short_side=96", "ingest.store_short_side=40",
        "ingest.shots.enabled=false"]).ingest
    (spec,) = plan_clips(probe_source(str(path), probe), probe)
    decoded = decode_clip(spec, probe, str(path))
    assert isinstance(decoded, DecodedClip) and decoded.frames.shape[1:3] == (96, 160)
    truth = []
    for frame in decoded.frames:  # ground truth read off the annotation frames themselves
        ys, xs = np.nonzero(on_square(frame))
        truth.append([[xs.min() / 160, ys.min() / 96, (xs.max() + 1) / 160, (ys.max() + 1) / 96]])

    class SegmentingOracle(OracleTracker):
        """The oracle's boxes, and the square's pixels as the mask."""

        def track(self, frames, seeds):
            out = super().track(frames, seeds)
            for frame, tracked in zip(frames, out, strict=True):
                for obj in tracked.objects.values():
                    obj.mask = on_square(frame) if obj.visible else None
            return out

    frames = list(decoded.frames)
    engines, cfg = oracle_engines(OracleDetector(frames, np.array(truth), ["square"]),
                                  SegmentingOracle(frames, np.array(truth)), ["square"])
    cfg = cfg.model_copy(update={"ingest": probe, "trajectories": cfg.trajectories.model_copy(
        update={"keep_masks": True})})
    engines.builder = cfg.trajectories.build(engines.detector, engines.tracker)
    sample = annotate_sample(decoded, engines, cfg, clip_media(spec, cfg.ingest, str(path)))
    assert (sample.width, sample.height) == stored_size(spec, cfg.ingest) == (66, 40)
    (inst,) = sample.instances
    stored = decode_frames(sample.media, "stored.mp4", inst.trajectory.frame_index).frames
    assert stored.shape[1:3] == (40, 66)
    for frame, box, counts in zip(stored, inst.trajectory.box, inst.trajectory.mask_rle, strict=True):
        x0, y0, x1, y1 = to_pixels(box, 66, 40)
        assert on_square(frame[y0 + 1:y1 - 1, x0 + 1:x1 - 1]).mean() > 0.95  # the box's inside is the square
        mask = decode_rle(counts, 40, 66)  # at the row's size, not the 160x96 it was tracked at
        assert on_square(frame)[mask].mean() > 0.9  # the mask's pixels are the square's ...
        assert abs(mask.sum() / (32 * 66 / 160 * 32 * 40 / 96) - 1) < 0.15  # ... and it has its area
