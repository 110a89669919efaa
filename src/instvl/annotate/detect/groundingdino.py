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
    GroundingDinoBaseConfig,
    check_frames,
    decode_queries,
    merge_found,
    phrase_token_spans,
    prompt_jobs,
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

    class Config(GroundingDinoBaseConfig):
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
        return self.detect_many(frames, [phrases] * len(frames))

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One phrase list per frame (`detect.base.MixedDetector`): the model takes a caption per image."""
        check_frames(frames)
        found: list[list[Detection]] = [[] for _ in frames]
        jobs = prompt_jobs(phrase_lists, lambda phrases: batch_phrases(
            unique_phrases(phrases), MAX_TEXT_LEN, lambda t: self.count_pieces(t) + 2))
        for start in range(0, len(jobs), self.config.batch_size):
            chunk = jobs[start:start + self.config.batch_size]
            batch = self._detect_batch([frames[i] for i, _ in chunk], [group for _, group in chunk])
            for (i, _), dets in zip(chunk, batch, strict=True):
                found[i] += dets
        return merge_found(found, self.config)

    def _detect_batch(self, frames, groups: Sequence[list[str]]) -> list[list[Detection]]:
        from instvl.annotate.detect.hf import preprocess_frames

        pixels, mask = preprocess_frames(frames, self.config.min_side, self.config.max_side)
        # Each image at its own size, padded into one NestedTensor (the model reads its .device and mask).
        images = [pixels[i, :, : int(mask[i, :, 0].sum()), : int(mask[i, 0].sum())].to(self.config.device)
                  for i in range(len(frames))]
        samples = require("groundingdino.util.misc", EXTRA).nested_tensor_from_tensor_list(images)
        with self._torch.no_grad():
            out = self.model(samples, captions=[to_prompt(group) for group in groups])
        probs = out["pred_logits"].float().sigmoid().cpu().numpy()
        boxes = out["pred_boxes"].float().cpu().numpy()
        c = self.config
        return [decode_queries(probs[i], boxes[i], phrase_token_spans(self.count_pieces, group), group,
                               c.box_threshold, c.text_threshold) for i, group in enumerate(groups)]


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
