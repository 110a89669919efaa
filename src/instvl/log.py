"""Logging set-up for the CLI and flows; library modules only call logging.getLogger(__name__)."""

import logging
import os
import sys

_warned: set[str] = set()


def setup_logging(level: str | int | None = None) -> None:
    """Configure the `instvl` logger once: a compact stderr handler, level from INSTVL_LOG_LEVEL."""
    root = logging.getLogger("instvl")
    if getattr(root, "_instvl_configured", False):
        return
    level = level or os.environ.get("INSTVL_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root._instvl_configured = True  # type: ignore[attr-defined]


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log `message` as a warning the first time it is seen in this process."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
