"""GroundingDINO through the original groundingdino-py package and its .pth checkpoints.

groundingdino-py needs transformers<5 and torchvision, so it lives in its own environment
(`pip install 'instvl[groundingdino]'`). Frames are batched into one forward pass per prompt; phrases are
assigned exactly as in the `hf` backend.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from instvl.annotate.detect.base import (
    GroundingSettings,
    check_frames,
    decode_queries,
    phrase_token_spans,
    suppress_duplicates,
)
from instvl.annotate.phrases import batch_phrases, to_prompt, unique_phrases
from instvl.annotate.tracks import Detection
from instvl.annotate.weights import WeightsError
from instvl.deps import require

log = logging.getLogger(__name__)

EXTRA = "groundingdino"
MAX_TEXT_LEN = 256


class GroundingDinoDetector:
    """Open-vocabulary detection with the reference GroundingDINO implementation."""

    class Config(GroundingSettings):
        kind: Literal["groundingdino"] = "groundingdino"
        config_path: Path | None = None
        """Model config (.py), e.g. GroundingDINO_SwinT_OGC.py; default: the one shipped with the package."""
        checkpoint_path: Path | None = None
        """Checkpoint file (.pth), e.g. groundingdino_swint_ogc.pth; None builds random weights, which the
        annotate config allows only with `random_init: true` (tests)."""
        text_encoder: str | None = None
        """BERT directory or hub id replacing the config's `text_encoder_type` (a local dir works offline)."""

        def build(self) -> "GroundingDinoDetector":
            return GroundingDinoDetector(self)

    def __init__(self, config: Config):
        self.config = config
        self._torch = require("torch", EXTRA)
        self.model = load_model(config, self._torch).to(config.device).eval()

    @property
    def model_id(self) -> str:
        return Path(self.config.checkpoint_path).name if self.config.checkpoint_path else "random-init"

    def count_pieces(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        check_frames(frames)
        results: list[list[Detection]] = [[] for _ in frames]
        for group in batch_phrases(unique_phrases(phrases), MAX_TEXT_LEN, lambda t: self.count_pieces(t) + 2):
            spans = phrase_token_spans(self.count_pieces, group)
            for start in range(0, len(frames), self.config.batch_size):
                batch = frames[start:start + self.config.batch_size]
                for offset, found in enumerate(self._detect_batch(batch, group, spans)):
                    results[start + offset] += found
        c = self.config
        return [suppress_duplicates(sorted(r, key=lambda d: -d.score), c.class_iou, c.cross_iou,
                                    c.max_detections) for r in results]

    def _detect_batch(self, frames, phrases, spans) -> list[list[Detection]]:
        from instvl.annotate.detect.hf import preprocess_frames

        pixels, mask = preprocess_frames(frames, self.config.min_side, self.config.max_side)
        # Each image at its own size, padded into one NestedTensor (the model reads its .device and mask).
        images = [pixels[i, :, : int(mask[i, :, 0].sum()), : int(mask[i, 0].sum())].to(self.config.device)
                  for i in range(len(frames))]
        samples = require("groundingdino.util.misc", EXTRA).nested_tensor_from_tensor_list(images)
        prompt = to_prompt(phrases)
        with self._torch.no_grad():
            out = self.model(samples, captions=[prompt] * len(images))
        probs = out["pred_logits"].float().sigmoid().cpu().numpy()
        boxes = out["pred_boxes"].float().cpu().numpy()
        c = self.config
        return [decode_queries(probs[i], boxes[i], spans, phrases, c.box_threshold, c.text_threshold)
                for i in range(len(frames))]


def load_model(config: GroundingDinoDetector.Config, torch: Any) -> Any:
    """Build the model from its .py config (optionally with a local text encoder), then load the weights.

    The package's own `load_model` cannot swap the text encoder, whose default is fetched from the hub.
    """
    slconfig = require("groundingdino.util.slconfig", EXTRA)
    models = require("groundingdino.models", EXTRA)
    config_path = config.config_path or default_config_path()
    for label, path in (("config", config_path), ("checkpoint", config.checkpoint_path)):
        if path is not None and not Path(path).is_file():
            raise WeightsError(f"detector (groundingdino): {label} file {str(path)!r} does not exist; pass "
                               f"it with --set detector.{label}_path=/path/to/it")
    args = slconfig.SLConfig.fromfile(str(config_path))
    args.device = config.device
    if config.text_encoder:
        args.text_encoder_type = config.text_encoder
    model = models.build_model(args)
    if config.checkpoint_path is not None:
        state = torch.load(str(config.checkpoint_path), map_location="cpu", weights_only=False)
        weights = {k.removeprefix("module."): v for k, v in state.get("model", state).items()}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected:
            raise ValueError(f"{config.checkpoint_path}: not a GroundingDINO checkpoint for {config_path} "
                             f"(unexpected keys such as {unexpected[:3]})")
    return model


def default_config_path() -> Path:
    """GroundingDINO_SwinT_OGC.py as shipped inside the groundingdino package."""
    config_pkg = require("groundingdino.config", EXTRA)
    if config_pkg.__file__ is None:  # installed without its __init__.py: no file to find the folder by
        raise WeightsError("detector (groundingdino): the package's config folder cannot be found; pass "
                           "--set detector.config_path=/path/to/GroundingDINO_SwinT_OGC.py")
    return Path(config_pkg.__file__).parent / "GroundingDINO_SwinT_OGC.py"
