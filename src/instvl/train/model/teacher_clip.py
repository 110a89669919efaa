"""The CLIP image tower as teacher (`kind: clip_hf`), loaded with transformers' CLIPVisionModel.

`model` is a hub id (e.g. "openai/clip-vit-large-patch14", read from the local cache when offline) or a
local directory. With `vision_config` the tower is built from that CLIPVisionConfig with random
weights instead (tests, dry runs). As in UMT, the targets of each aligned layer are its patch tokens
after CLIP's final LayerNorm, and the class-token attention of the last layer guides masking.
"""

import logging
from typing import Any, Literal

from torch import Tensor

from instvl.config import BaseConfig
from instvl.deps import require
from instvl.train.model.teacher import Teacher, class_attention

log = logging.getLogger(__name__)


class CLIPTeacher(Teacher):
    """Frozen transformers CLIPVisionModel run per frame, with position embeddings interpolated."""

    class Config(BaseConfig):
        kind: Literal["clip_hf"] = "clip_hf"
        model: str = "openai/clip-vit-base-patch16"
        """Hub id or local directory of a CLIP (or CLIP vision) checkpoint."""
        vision_config: dict[str, Any] | None = None
        """CLIPVisionConfig keyword arguments: build a randomly initialised tower instead of loading."""

        def build(self) -> "CLIPTeacher":
            return CLIPTeacher(self)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = load_clip_vision(cfg)
        config = self.vision.config
        self.patch_size, self.depth = config.patch_size, config.num_hidden_layers
        self.feature_dim = config.hidden_size

    def encode_frames(self, frames: Tensor, num_layers: int) -> tuple[list[Tensor], Tensor]:
        out = self.vision(pixel_values=frames, interpolate_pos_encoding=True, output_hidden_states=True)
        hidden = out.hidden_states
        post_norm = self.vision.post_layernorm
        layers = [post_norm(h)[:, 1:] for h in hidden[len(hidden) - num_layers:]]
        return layers, self._last_attention(hidden[-2])

    def _last_attention(self, last_input: Tensor) -> Tensor:
        """CLS-to-patch attention of the last encoder layer, recomputed from its input hidden state."""
        layer = self.vision.encoder.layers[-1]
        attn = layer.self_attn
        normed = layer.layer_norm1(last_input)
        return class_attention(attn.q_proj(normed[:, 0]), attn.k_proj(normed), attn.num_heads, attn.scale)


def load_clip_vision(cfg: CLIPTeacher.Config) -> Any:
    """A CLIPVisionModel from a random config or from a checkpoint, with a clear error when missing."""
    transformers = require("transformers", "train")
    if cfg.vision_config is not None:
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**cfg.vision_config))
    try:
        model = transformers.CLIPVisionModel.from_pretrained(cfg.model)
    except OSError as err:
        raise OSError(
            f"cannot load the CLIP teacher {cfg.model!r}: {err}. Give a local directory or a hub id that "
            "is in the Hugging Face cache (offline runs), or use teacher.kind=vit_random."
        ) from err
    log.info("loaded CLIP teacher %s (%d layers, width %d)", cfg.model,
             model.config.num_hidden_layers, model.config.hidden_size)
    return model
