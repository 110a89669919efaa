"""instvl: build instance-grounded video-language corpora and pre-train InstAP models on them."""

__version__ = "0.1.0"
