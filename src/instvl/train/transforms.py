"""Per-sample transforms of the training data: decode media, pick frames, resize, normalise, pick sentences.

Everything random here takes an explicit `numpy.random.Generator`, derived from (seed, epoch, sample id)
by `sample_rng`, so a sample looks the same whichever rank or worker reads it and a resumed run sees
the same augmentations as an uninterrupted one.
"""

import hashlib
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from instvl.datasets.schema import InstanceRow, SampleRow
from instvl.media.decode import DecoderName, decode_frames, media_of
from instvl.media.fetch import MediaError

if TYPE_CHECKING:  # torch is imported where it is used, so this module loads without it
    import torch

    from instvl.train.config import DataConfig

MEANS_STDS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")


def stable_hash(text: str) -> int:
    """A 63-bit hash of `text` that is the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def sample_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    """The random generator of one sample in one epoch."""
    return np.random.default_rng([seed, epoch, stable_hash(sample_id)])


def frame_indices(total: int, num: int, rng: np.random.Generator | None) -> np.ndarray:
    """`num` indices into `total` frames: one per equal segment, random within it (train) or its middle."""
    bounds = np.linspace(0, max(total, 1), num + 1)
    starts, ends = np.floor(bounds[:-1]).astype(int), np.maximum(np.floor(bounds[1:]).astype(int), 1)
    ends = np.maximum(ends, starts + 1)
    if rng is None:
        picked = (starts + ends - 1) // 2
    else:
        picked = starts + (rng.random(num) * (ends - starts)).astype(int)
    return np.clip(picked, 0, max(total - 1, 0))


def resize_geometry(height: int, width: int, mode: str) -> tuple[float, float, float, float]:
    """The crop window (x0, y0, x1, y1), normalised to the frame, that `resize_frames` keeps."""
    if mode == "squash":
        return 0.0, 0.0, 1.0, 1.0
    side = min(height, width)
    x0, y0 = (width - side) / 2 / width, (height - side) / 2 / height
    return x0, y0, 1 - x0, 1 - y0


def resize_frames(frames: "torch.Tensor", size: int, mode: str) -> "torch.Tensor":
    """(T, 3, H, W) float frames -> (T, 3, size, size): centre square crop then resize, or squash."""
    import torch.nn.functional as F

    height, width = frames.shape[-2:]
    x0, y0, x1, y1 = resize_geometry(height, width, mode)
    top, left = round(y0 * height), round(x0 * width)
    bottom, right = top + round((y1 - y0) * height), left + round((x1 - x0) * width)
    window = frames[..., top:bottom, left:right]
    return F.interpolate(window, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalise(frames: "torch.Tensor", kind: str) -> "torch.Tensor":
    """Subtract the mean and divide by the std of `kind` ('imagenet' or 'clip') along the channel axis."""
    import torch

    mean, std = (torch.tensor(v, dtype=frames.dtype).view(3, 1, 1) for v in MEANS_STDS[kind])
    return (frames - mean) / std


def clean_text(text: str) -> str:
    """UMT's caption pre-processing: lower case, no punctuation, '-' and '/' as spaces, single spaces."""
    text = _PUNCTUATION.sub("", text.lower()).replace("-", " ").replace("/", " ")
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    """The sentences of a caption (split after . ! ?), empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()] or [text.strip()]


def pick_sentence(text: str, seed: int, epoch: int, key: str) -> str:
    """One sentence of a multi-sentence caption for this epoch.

    A per-caption random permutation of the sentences is walked one step per epoch, so the choice is
    random, yet every sentence is seen once in each `len(sentences)` epochs.
    """
    sentences = split_sentences(text)
    if len(sentences) == 1:
        return sentences[0]
    order = np.random.default_rng([seed, stable_hash(key)]).permutation(len(sentences))
    return sentences[int(order[epoch % len(sentences)])]


def load_frames(row: SampleRow, num: int, rng: np.random.Generator | None,
                decoder: DecoderName = "pyav") -> tuple[np.ndarray, np.ndarray]:
    """(num, H, W, 3) uint8 frames of a row and the clip frame indices they were taken at.

    An image becomes a clip of `num` identical frames (frame index 0), so images and videos share
    one model path. Indices past the last decodable frame repeat the last frame, so a clip whose
    metadata promises more frames than it holds still gives a full sample. `decoder="auto"` or
    "decord" decodes in a crash-isolated worker process; raises MediaError.
    """
    media = media_of(row)
    source = row.get("source")
    uri = str((source and source.get("uri")) or row.get("sample_id"))
    if media is None:
        raise MediaError(uri, "row has no media bytes and its source is not a local file", stage="decode")
    if row.get("media_type") == "image":
        sampled = np.zeros(num, dtype=np.int64)
    else:
        sampled = frame_indices(int(row.get("num_frames") or 1), num, rng)
    return decode_frames(media, uri, sampled, decoder=decoder, on_missing="repeat").frames, sampled


def caption_text(text: str | None, cfg: "DataConfig", epoch: int, key: str, train: bool) -> str:
    """The caption a sample trains on this epoch: one cycled sentence (training) or all of it, cleaned."""
    text = text or ""
    if train and cfg.caption_sampling == "sentence":
        text = pick_sentence(text, cfg.seed, epoch, key)
    return clean_text(text)


def choose_instances(instances: list[InstanceRow] | None, limit: int,
                     rng: np.random.Generator | None) -> list[InstanceRow]:
    """Instances with a caption and a trajectory; a random (training) or leading subset of `limit`."""
    usable = [inst for inst in instances or [] if inst.get("caption") and
              ((inst.get("trajectory") or {}).get("frame_index"))]
    if len(usable) <= limit:
        return usable
    if rng is None:
        return usable[:limit]
    return [usable[i] for i in sorted(rng.choice(len(usable), limit, replace=False))]


def prepare_instance(inst: InstanceRow, pixels: "torch.Tensor", sampled: np.ndarray,
                     window: tuple[float, float, float, float], cfg: "DataConfig", epoch: int, key: str,
                     train: bool) -> dict[str, Any]:
    """Crop clip (3, T, c, c), boxes (T, 4) in model-input coordinates, presence mask and caption."""
    import torch

    from instvl.geometry import boxes_at
    from instvl.train import crops

    traj = inst["trajectory"]
    if cfg.instance_boxes == "single":
        boxes, present = crops.single_boxes(traj["box"], len(sampled))
    else:
        boxes, present = boxes_at(traj["frame_index"], traj["box"], sampled, mode="interpolate")
    in_window, visible = crops.to_window(boxes, window)
    return {"instance_id": int(inst["instance_id"]),
            "caption": caption_text(inst.get("caption"), cfg, epoch, f"{key}/{inst['instance_id']}", train),
            "crop": crops.crop_clip(pixels, boxes, cfg.crop_size, cfg.crop_pad),
            "boxes": torch.from_numpy(in_window), "present": torch.from_numpy(present & visible)}


def prepare_sample(row: SampleRow, cfg: "DataConfig", epoch: int, train: bool) -> dict[str, Any]:
    """One row -> {'sample_id', 'video' (3, T, S, S), 'global_caption', 'instances': [...]}."""
    import torch

    sample_id = row["sample_id"]
    rng = sample_rng(cfg.seed, epoch, sample_id) if train else None
    frames, sampled = load_frames(row, cfg.num_frames, rng, cfg.decoder)
    # Normalising first is exact (resizing is a convex combination of pixels) and serves video and crops.
    pixels = normalise(torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255), cfg.normalize)
    window = resize_geometry(pixels.shape[-2], pixels.shape[-1], cfg.resize)
    instances = [prepare_instance(inst, pixels, sampled, window, cfg, epoch, sample_id, train)
                 for inst in choose_instances(row.get("instances"), cfg.max_instances, rng)]
    return {"sample_id": sample_id, "video": resize_frames(pixels, cfg.img_size, cfg.resize).transpose(0, 1),
            "global_caption": caption_text(row.get("global_caption"), cfg, epoch, sample_id, train),
            "instances": instances}
