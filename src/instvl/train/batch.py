"""The batch contract: prepared samples -> the dict `InstAP.forward` takes (text tokenised, clips and
instance crops stacked), and that dict moved to a device.
"""

import logging
from typing import Any

from instvl.deps import require
from instvl.train import transforms
from instvl.train.config import DataConfig

torch = require("torch", "train")
log = logging.getLogger(__name__)
_warned: set[str] = set()
"""Caption kinds whose first cut this process has already warned about."""


def tokenize(tokenizer: Any, texts: list[str], max_len: int) -> tuple[Any, Any]:
    """Token ids and attention mask (long [n, L]), padded to the longest text; [0, 1] for no text."""
    if not texts:
        return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long)
    out = tokenizer(texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return out["input_ids"].long(), out["attention_mask"].long()


def count_cut(tokenizer: Any, texts: list[str], max_len: int, kind: str) -> int:
    """How many of `texts` have more than `max_len` tokens, i.e. lose their end in `tokenize`; the first
    such caption of each `kind` in a process is logged."""
    if not texts:
        return 0
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    cut = [(n, text) for n, text in zip(lengths, texts, strict=True) if n > max_len]
    if cut and kind not in _warned:
        _warned.add(kind)
        log.warning("%s caption of %d tokens cut to %d: %r (warned once per process; the share of cut "
                    "captions is logged as text_cut_%s)", kind, cut[0][0], max_len, cut[0][1], kind)
    return len(cut)


def collate(samples: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig, max_text_len: int,
            inst_text_len: int | None = None) -> dict[str, Any]:
    """Prepared samples (all images or all videos) -> the batch dict the model takes (N instances over all
    B samples, N may be 0).

    Global captions are tokenised to `max_text_len` tokens, instance captions to `inst_text_len` (None:
    `cfg.instance_text_len`, else `max_text_len`).

    video [B,3,T,S,S] float (normalised; T = 1 for images); text_ids/text_mask [B,L] long; inst_crops
    [N,3,Tc,c,c] (Tc = data.crop_frames, 1 for images); inst_text_ids/inst_text_mask [N,L'];
    inst_sample_index [N] (batch row of each instance); inst_boxes [N,T,4] xyxy in [0,1] of the model
    input frame; inst_present [N,T] bool (inside the track's span and inside the frame); media_type
    ('image' or 'video'); sample_ids, instance_ids, global_captions, instance_captions lists; text_cut
    {'global' | 'inst': (captions cut, captions)}.
    """
    insts = [(i, inst) for i, sample in enumerate(samples) for inst in sample["instances"]]
    size, crop = cfg.img_size, cfg.crop_size
    frames = samples[0]["video"].shape[1] if samples else cfg.num_frames
    crop_frames = (insts[0][1]["crop"].shape[1] if insts
                   else len(transforms.crop_positions(frames, cfg.crop_frames)))
    inst_len = inst_text_len or cfg.instance_text_len or max_text_len
    texts, inst_texts = [s["global_caption"] for s in samples], [inst["caption"] for _, inst in insts]
    text_ids, text_mask = tokenize(tokenizer, texts, max_text_len)
    inst_ids, inst_mask = tokenize(tokenizer, inst_texts, inst_len)
    text_cut = {"global": (count_cut(tokenizer, texts, max_text_len, "global"), len(texts)),
                "inst": (count_cut(tokenizer, inst_texts, inst_len, "inst"), len(inst_texts))}
    return {
        "video": _stack([s["video"] for s in samples], (0, 3, frames, size, size)),
        "text_ids": text_ids, "text_mask": text_mask,
        "inst_crops": _stack([inst["crop"] for _, inst in insts], (0, 3, crop_frames, crop, crop)),
        "inst_text_ids": inst_ids, "inst_text_mask": inst_mask,
        "inst_sample_index": torch.tensor([i for i, _ in insts], dtype=torch.long),
        "inst_boxes": _stack([inst["boxes"] for _, inst in insts], (0, frames, 4)),
        "inst_present": _stack([inst["present"] for _, inst in insts], (0, frames), torch.bool),
        "media_type": "image" if samples and samples[0]["media_type"] == "image" else "video",
        "sample_ids": [s["sample_id"] for s in samples],
        "instance_ids": [inst["instance_id"] for _, inst in insts],
        "global_captions": [s["global_caption"] for s in samples],
        "instance_captions": [inst["caption"] for _, inst in insts],
        "text_cut": text_cut,
    }


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch with its tensors on `device` (lists of ids and captions stay as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _stack(tensors: list[Any], empty_shape: tuple[int, ...], dtype: Any = None) -> Any:
    if tensors:
        return torch.stack(tensors)
    return torch.zeros(empty_shape, dtype=dtype or torch.float32)
