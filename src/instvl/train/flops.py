"""FLOPs of one InstAP training step per sample, counted by torch's FlopCounterMode on meta tensors.

Nothing is computed and no weights are loaded: the model is built on the meta device (a pretrained
teacher or text tower is replaced by a random one of the same shape), fed a synthetic batch of the
configured shapes, and run forward and backward while torch counts the matmul/attention/conv FLOPs.
The teacher runs forward only (frozen); activation recomputation (`grad_checkpointing`) is not counted.

    flops = step_flops(cfg, media="image")   # {"total", "global_only", "instance_branch", "ratio"}
"""

import contextlib
from collections.abc import Iterator
from typing import Any, Literal
from unittest import mock

from instvl.deps import require
from instvl.train.config import TrainConfig
from instvl.train.model import InstAPConfig
from instvl.train.transforms import crop_positions

torch = require("torch", "train")

# Shapes of the pretrained towers the presets name, so that they can be built with random weights.
CLIP_SHAPES = {
    "openai/clip-vit-base-patch16": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                     "num_attention_heads": 12, "patch_size": 16, "image_size": 224},
    "openai/clip-vit-large-patch14": {"hidden_size": 1024, "intermediate_size": 4096,
                                      "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14,
                                      "image_size": 224},
}
BERT_SHAPES = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "google-bert/bert-base-uncased": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                      "intermediate_size": 3072},
    "google-bert/bert-large-uncased": {"hidden_size": 1024, "num_hidden_layers": 24,
                                       "num_attention_heads": 16, "intermediate_size": 4096},
}


def random_towers(model: InstAPConfig) -> InstAPConfig:
    """The model config with its pretrained teacher and text tower replaced by random ones of equal shape."""
    update: dict[str, Any] = {}
    teacher = model.teacher
    if teacher.kind == "clip_hf" and getattr(teacher, "vision_config", None) is None:
        name = getattr(teacher, "model", "")
        if name not in CLIP_SHAPES:
            raise ValueError(f"no known shape for the CLIP teacher {name!r}; give teacher.vision_config")
        update["teacher"] = teacher.model_copy(update={"vision_config": CLIP_SHAPES[name]})
    if model.text.random_config is None:
        if model.text.model not in BERT_SHAPES:
            raise ValueError(f"no known shape for the text tower {model.text.model!r}; "
                             "give text.random_config")
        update["text"] = model.text.model_copy(update={"model": "minilm",
                                                       "random_config": BERT_SHAPES[model.text.model]})
    return model.model_copy(update=update)


def synthetic_batch(cfg: TrainConfig, media: Literal["image", "video"], batch: int, instances: int,
                    device: Any) -> dict[str, Any]:
    """A batch of the configured shapes (`instances` per sample), with captions of the longest length the
    training batches can have (model.text.max_len; instance captions data.instance_text_len)."""
    data, length = cfg.data, cfg.model.text.max_len
    inst_length = data.instance_text_len or length
    frames = 1 if media == "image" else data.num_frames
    crop_frames = len(crop_positions(frames, data.crop_frames))
    count = batch * instances
    ids = torch.full((batch, length), 1000, dtype=torch.long, device=device)
    inst_ids = torch.full((count, inst_length), 1000, dtype=torch.long, device=device)
    return {"video": torch.zeros(batch, 3, frames, data.img_size, data.img_size, device=device),
            "text_ids": ids, "text_mask": torch.ones_like(ids),
            "inst_crops": torch.zeros(count, 3, crop_frames, data.crop_size, data.crop_size, device=device),
            "inst_text_ids": inst_ids, "inst_text_mask": torch.ones_like(inst_ids),
            "inst_sample_index": torch.arange(batch, device="cpu").repeat_interleave(instances)}


@contextlib.contextmanager
def _meta_text_masks() -> Iterator[None]:
    """transformers asks whether a text mask is all ones (to skip it), which a meta tensor cannot answer:
    answer 'no' while counting (the attention FLOPs are the same either way)."""
    from transformers import masking_utils

    with mock.patch.object(masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *args, **kwargs: False):
        yield


def step_flops(cfg: TrainConfig, media: Literal["image", "video"] = "video", instances: int | None = None,
               batch: int = 2) -> dict[str, float]:
    """FLOPs per sample of one training forward + backward: the total and the instance branch's share.

    `instances` per sample defaults to what training keeps of this media type (`data.max_instances`, for
    images `data.max_instances_image` when set). Returns {'total', 'global_only',
    'instance_branch', 'ratio'}: 'global_only' is the same step with the instance loss off, 'ratio' =
    total / global_only (the cost of the instance branch as a multiple of the global-only step).
    """
    from torch.utils.flop_counter import FlopCounterMode

    instances = cfg.data.instance_cap(media, train=True) if instances is None else instances
    counts = {}
    for name, inst_loss in (("total", True), ("global_only", False)):
        model_cfg = random_towers(cfg.model)
        model_cfg = model_cfg.model_copy(update={"loss": model_cfg.loss.model_copy(
            update={"inst_loss": inst_loss}), "masking": model_cfg.masking.model_copy(
            update={"sampling": "topk"})})  # multinomial has no meta kernel; the count is the same
        with torch.device("meta"):
            model = model_cfg.build()
        model.train()
        data = synthetic_batch(cfg, media, batch, instances if inst_loss else 0, "meta")
        with FlopCounterMode(display=False) as counter, _meta_text_masks():
            model(data)["loss"].backward()
        counts[name] = counter.get_total_flops() / batch
    counts["instance_branch"] = counts["total"] - counts["global_only"]
    counts["ratio"] = counts["total"] / counts["global_only"]
    return counts
