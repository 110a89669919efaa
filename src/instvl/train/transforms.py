"""Per-sample transforms of the training data: decode media, pick frames, resize, normalise, pick sentences.

The hot path works on uint8 frames until the very end: frames are shrunk while decoding (short side
`data.decode_short_side`, by default the model size), the scene is cut and resized from that reduced
frame with OpenCV, and so are the instance crops; only the final model-size pixels are normalised to
float. An image is a 1-frame clip (T = 1) with 1-frame crops, not a repeated clip.

Everything random here takes an explicit `numpy.random.Generator`, derived from (seed, epoch, sample id)
by `sample_rng`, so a sample looks the same whichever rank or worker reads it and a resumed run sees
the same augmentations as an uninterrupted one.
"""

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from instvl.datasets.schema import InstanceRow, SampleRow
from instvl.media.decode import DecoderName, Quality, decode_frames, media_of, resize_to
from instvl.media.fetch import Media, MediaError, fetch_media

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


def frame_indices(total: int, num: int, rng: np.random.Generator | None) -> NDArray[Any]:
    """`num` indices into `total` frames: one per equal segment, random within it (train) or its middle."""
    bounds = np.linspace(0, max(total, 1), num + 1)
    starts, ends = np.floor(bounds[:-1]).astype(int), np.maximum(np.floor(bounds[1:]).astype(int), 1)
    ends = np.maximum(ends, starts + 1)
    if rng is None:
        picked = (starts + ends - 1) // 2
    else:
        picked = starts + (rng.random(num) * (ends - starts)).astype(int)
    return np.clip(picked, 0, max(total - 1, 0))


def resize_geometry(height: int, width: int, mode: str) -> "Window":
    """The crop window (x0, y0, x1, y1), normalised to the frame, that `resize_frames` keeps."""
    if mode == "squash":
        return 0.0, 0.0, 1.0, 1.0
    side = min(height, width)
    x0, y0 = (width - side) / 2 / width, (height - side) / 2 / height
    return x0, y0, 1 - x0, 1 - y0


Window = tuple[float, float, float, float]
"""A crop window (x0, y0, x1, y1) normalised to the frame."""


def window_pixels(height: int, width: int, window: Window) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel bounds of a normalised crop window of an H x W frame."""
    x0, y0, x1, y1 = window
    top, left = round(y0 * height), round(x0 * width)
    return top, left, top + round((y1 - y0) * height), left + round((x1 - x0) * width)


def resize_frames(frames: NDArray[Any], size: int, mode: str) -> NDArray[Any]:
    """(T, H, W, 3) uint8 frames -> (T, size, size, 3) uint8: centre square crop then resize, or squash."""
    height, width = frames.shape[1], frames.shape[2]
    top, left, bottom, right = window_pixels(height, width, resize_geometry(height, width, mode))
    return np.stack([resize_to(np.ascontiguousarray(f[top:bottom, left:right]), size, size)
                     for f in frames])


def normalise(frames: NDArray[Any], kind: str) -> "torch.Tensor":
    """(T, h, w, 3) uint8 frames -> (3, T, h, w) float32, minus the mean and over the std of `kind`."""
    import torch

    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None, None] for v in MEANS_STDS[kind])
    # channels first while still uint8 (a strided copy of 1 byte, not 4), then scaled in place: 5x faster
    # than scaling channels-last and transposing the floats, and the same values
    scaled = np.ascontiguousarray(frames.transpose(3, 0, 1, 2)).astype(np.float32)
    scaled *= 1.0 / (255.0 * std)
    scaled -= mean / std
    return torch.from_numpy(scaled)


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


def row_media(row: SampleRow) -> tuple[Media, str]:
    """A row's media (embedded bytes, a local file, or the bytes behind a URL) and the uri to name it by."""
    source = row.get("source")
    uri = str((source and source.get("uri")) or row.get("sample_id"))
    media = media_of(row)
    if media is None and "://" in uri and not uri.startswith("file://"):
        media = fetch_media(uri)
    if media is None:
        raise MediaError(uri, "row has no media bytes and its source is not a local file", stage="decode")
    return media, uri


def video_length(row: SampleRow, media: Media, uri: str) -> int:
    """Frames of a video row: its num_frames, or probed when the row does not say (annotation lists)."""
    if row.get("num_frames"):
        return int(row["num_frames"])
    from instvl.media.probe import probe_video

    return probe_video(media, uri).num_frames


def load_frames(row: SampleRow, num: int, rng: np.random.Generator | None, decoder: DecoderName = "pyav",
                short_side: int | None = None,
                quality: Quality = "exact") -> tuple[NDArray[Any], NDArray[Any]]:
    """(T, H, W, 3) uint8 frames of a row and the clip frame indices they were taken at.

    A video gives T = `num` frames; an image gives T = 1 (frame index 0). Frames are shrunk while
    decoding so that their short side is at most `short_side`. Indices past the last decodable frame
    repeat the last frame, so a clip whose metadata promises more frames than it holds still gives a
    full sample. `decoder="auto"` or "decord" decodes in a crash-isolated worker process; `quality` trades
    pixels for decoding speed (`instvl.media.decode.Quality`). Raises MediaError.
    """
    media, uri = row_media(row)
    sampled: NDArray[Any]
    if row.get("media_type") == "image":
        sampled = np.zeros(1, dtype=np.int64)
    else:
        sampled = frame_indices(video_length(row, media, uri), num, rng)
    decoded = decode_frames(media, uri, sampled, decoder=decoder, max_short_side=short_side,
                            on_missing="repeat", quality=quality)
    return decoded.frames, sampled


def crop_positions(num_frames: int, crop_frames: int | None) -> NDArray[Any]:
    """Which of a sample's `num_frames` frames its crop clips use: `crop_frames` of them, evenly spread."""
    if crop_frames is None or crop_frames >= num_frames:
        return np.arange(num_frames)
    return np.round(np.linspace(0, num_frames - 1, crop_frames)).astype(np.int64)


def pick_caption(captions: Sequence[str], seed: int, epoch: int, key: str) -> str:
    """One of several captions of a sample for this epoch, cycling through all of them (as sentences do)."""
    if len(captions) == 1:
        return captions[0]
    order = np.random.default_rng([seed, stable_hash(key), 1]).permutation(len(captions))
    return captions[int(order[epoch % len(captions)])]


def caption_text(text: str | Sequence[str] | None, cfg: "DataConfig", epoch: int, key: str,
                 train: bool) -> str:
    """The caption a sample trains on this epoch, cleaned: of several captions one per epoch (training) or
    the first; of that, one cycled sentence (training, `caption_sampling: sentence`) or all of it."""
    captions = [text or ""] if text is None or isinstance(text, str) else list(text) or [""]
    chosen = pick_caption(captions, cfg.seed, epoch, key) if train else captions[0]
    if train and cfg.caption_sampling == "sentence":
        chosen = pick_sentence(chosen, cfg.seed, epoch, key)
    return clean_text(chosen)


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


def prepare_instance(inst: InstanceRow, frames: NDArray[Any], sampled: NDArray[Any], crop_at: NDArray[Any],
                     window: Window, cfg: "DataConfig", epoch: int, key: str,
                     train: bool) -> dict[str, Any]:
    """Crop clip (3, Tc, c, c) at the `crop_at` frames, boxes (T, 4) in model-input coordinates and the
    presence mask at every sampled frame, and the caption."""
    import torch

    from instvl.geometry import boxes_at
    from instvl.train import crops

    traj = inst["trajectory"]
    if cfg.instance_boxes == "single":
        boxes, present = crops.single_boxes(traj["box"], len(sampled))
    elif len(sampled) == 1 and list(traj["frame_index"]) == [sampled[0]]:  # an image: its box, no lookup
        boxes, present = np.asarray(traj["box"], dtype=np.float64).reshape(-1, 4), np.ones(1, dtype=bool)
    else:
        boxes, present = boxes_at(traj["frame_index"], traj["box"], sampled, mode="interpolate")
    in_window, visible = crops.to_window(boxes, window)
    clip = crops.crop_clip(frames[crop_at], boxes[crop_at], cfg.crop_size, cfg.crop_pad)
    return {"instance_id": int(inst["instance_id"]),
            "caption": caption_text(inst.get("caption"), cfg, epoch, f"{key}/{inst['instance_id']}", train),
            "crop": normalise(clip, cfg.normalize),
            "boxes": torch.from_numpy(in_window), "present": torch.from_numpy(present & visible)}


def prepare_sample(row: SampleRow, cfg: "DataConfig", epoch: int, train: bool) -> dict[str, Any]:
    """One row -> {'sample_id', 'media_type', 'video' (3, T, S, S), 'global_caption', 'instances': [...]}.

    T is `cfg.num_frames` for a video and 1 for an image; crops have `cfg.crop_frames` frames (1 for an
    image). Rows of annotation lists may carry several captions (`captions`) instead of one.
    """
    sample_id = row["sample_id"]
    rng = sample_rng(cfg.seed, epoch, sample_id) if train else None
    frames, sampled = load_frames(row, cfg.num_frames, rng, cfg.decoder, cfg.short_side, cfg.decode_quality)
    window = resize_geometry(frames.shape[1], frames.shape[2], cfg.resize)
    crop_at = crop_positions(len(sampled), cfg.crop_frames)
    cap = cfg.instance_cap(row.get("media_type"), train)
    instances = [prepare_instance(inst, frames, sampled, crop_at, window, cfg, epoch, sample_id, train)
                 for inst in choose_instances(row.get("instances"), cap, rng)]
    captions: Any = row.get("captions") or row.get("global_caption")
    return {"sample_id": sample_id, "media_type": "image" if len(sampled) == 1 and
            row.get("media_type") == "image" else "video",
            "video": normalise(resize_frames(frames, cfg.img_size, cfg.resize), cfg.normalize),
            "global_caption": caption_text(captions, cfg, epoch, sample_id, train),
            "instances": instances}
