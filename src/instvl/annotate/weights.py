"""Where each annotation model's weights come from, whether they are random, and whether they are there.

Every backend config says its weights in its own fields (`model` hub id or folder, `checkpoint` file,
`tiny_random`, none for the algorithmic backends). `weights_of` reads them into one `Weights` record;
provenance stores it in every row, `random_parts` lists what would run on random weights (allowed only
with `random_init: true`), and `check_weights` fails before any work when a checkpoint is missing, with
the model's name and how to provide it.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from instvl.config import BaseConfig


class WeightsError(OSError):
    """A model's weights are missing: the message names the model and how to provide it."""


@dataclass(frozen=True, slots=True)
class Weights:
    """One role's weights: `source` is a hub id, a local path, or what the backend computes instead."""

    role: str
    kind: str
    source: str
    revision: str | None = None
    random: bool = False
    hub: bool = False
    """`source` is a Hugging Face hub id (not a local folder)."""
    local: bool = False
    """`source` is a local file or folder that must exist."""

    def provenance(self) -> dict[str, str]:
        """The provenance keys of this role (added next to the `role: kind:model` key)."""
        out = {f"{self.role}.weights": self.source, f"{self.role}.random_init": str(self.random).lower()}
        if self.hub:
            out[f"{self.role}.revision"] = self.revision or "main"
        return out


_NO_WEIGHTS = {
    ("detector", "pixels"): "none: colour segmentation",
    ("tracker", "fake"): "none: template matching",
    ("captioner", "pixels"): "none: described from pixels",
    ("captioner", "fake"): "none: described from pixels",
}


def weights_of(role: str, cfg: BaseConfig) -> Weights:
    """The weights of one backend config (detector, tracker or captioner)."""
    kind = str(getattr(cfg, "kind", "?"))
    if getattr(cfg, "tiny_random", False):
        return Weights(role, kind, "random-init: tiny config", random=True)
    if (role, kind) == ("detector", "fake"):
        return Weights(role, kind, "none: seeded random boxes", random=True)
    if (role, kind) in _NO_WEIGHTS:
        return Weights(role, kind, _NO_WEIGHTS[role, kind])
    if kind == "sam2":
        checkpoint = getattr(cfg, "checkpoint", None)
        if checkpoint is None:
            return Weights(role, kind, f"random-init: {cfg.config_file}", random=True)  # type: ignore[attr-defined]
        return Weights(role, kind, str(checkpoint), local=True)
    if kind == "groundingdino":
        checkpoint = getattr(cfg, "checkpoint_path", None)
        if checkpoint is None:
            return Weights(role, kind, "random-init: GroundingDINO config", random=True)
        return Weights(role, kind, str(checkpoint), local=True)
    if kind == "openai":
        return Weights(role, kind, f"{cfg.model} at {cfg.base_url}")  # type: ignore[attr-defined]
    model = str(getattr(cfg, "model", ""))
    revision = getattr(cfg, "revision", None)
    if looks_local(model):
        return Weights(role, kind, model, local=True)
    return Weights(role, kind, model, revision=revision, hub=True)


def looks_local(source: str) -> bool:
    """True for a path (absolute, relative with a slash-dot start, or existing), False for 'org/name'."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def random_parts(weights: list[Weights]) -> list[str]:
    """'role (kind): source' of each part that would run on random weights."""
    return [f"{w.role} ({w.kind}): {w.source}" for w in weights if w.random]


def offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_weights(weights: list[Weights]) -> None:
    """Raise WeightsError naming every model whose weights are not available, and how to provide each.

    Local files and folders must exist. Hub ids must be in the local Hugging Face cache when the hub is
    off (HF_HUB_OFFLINE=1); online, transformers downloads them on first use.
    """
    problems = [problem for w in weights if (problem := _missing(w))]
    if problems:
        raise WeightsError("model weights are missing:\n  " + "\n  ".join(problems))


def _missing(w: Weights) -> str | None:
    field = {"sam2": "checkpoint", "groundingdino": "checkpoint_path"}.get(w.kind, "model")
    if w.local and not Path(w.source).expanduser().exists():
        return (f"{w.role} ({w.kind}): {w.source!r} does not exist; download the checkpoint and pass its "
                f"path with --set {w.role}.{field}=/path/to/it")
    if w.hub and offline() and not _in_hub_cache(w.source, w.revision):
        return (f"{w.role} ({w.kind}): {w.source!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 "
                f"forbids downloading it; run `hf download {w.source}` where the hub is reachable (same "
                f"HF_HOME), or save the model to a folder and pass --set {w.role}.{field}=/path/to/folder")
    return None


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


@contextmanager
def weights_error(role: str, model: str) -> Iterator[None]:
    """Turn a hub or folder load failure (OSError) into a WeightsError that names the model and the fix."""
    try:
        yield
    except OSError as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{role}: cannot load weights {model!r} ({err}). Download them where the hub is "
                           f"reachable (`hf download {model}`, same HF_HOME), or save the model to a folder "
                           f"and pass --set {role}.model=/path/to/folder") from err
