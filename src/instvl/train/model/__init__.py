"""The InstAP model: config, module and the tokenizer that goes with its text tower."""

from instvl.train.model.instap import InstAP, InstAPConfig, LossConfig
from instvl.train.model.text import load_tokenizer

__all__ = ["InstAP", "InstAPConfig", "LossConfig", "load_tokenizer"]
