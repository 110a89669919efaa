"""Checkpoints: atomic save and exact resume of model, optimizer, schedule, data position and RNG states.

A checkpoint is one file, OUTPUT/checkpoints/step-0000123.pt, written to a hidden temporary name and
renamed into place, so a killed run never leaves a half-written file that looks finished. It holds:
- `model`: the state dict without frozen parameters when the frozen part can be rebuilt from its own
  source (a pretrained CLIP teacher); a randomly initialised teacher is saved, since it cannot;
- `optimizer`, `scheduler`, `step`, the run `config` (JSON) and the instvl version;
- `ranks`: per rank, the data position (`DataState`) and the python, numpy and torch RNG states.
Everything is plain tensors and containers, so it loads with `torch.load(weights_only=True)`.
"""

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from instvl import __version__
from instvl.deps import require

torch = require("torch", "train")
log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model being resumed."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, as weights-only-loadable values."""
    legacy = cast(tuple[str, NDArray[Any], int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, gauss = legacy
    state = {"python": _to_lists(random.getstate()), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple | list) else value


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"step-{step:07d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def model_state(model: Any, skip_frozen: bool) -> dict[str, Any]:
    """The model's state dict, without parameters that do not train when `skip_frozen`."""
    state = model.state_dict()
    if not skip_frozen:
        return state
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in state.items() if k not in frozen}


def check_fit(model: Any, missing: list[str], unexpected: list[str], source: str | Path,
              allowed_missing: tuple[str, ...] = ()) -> None:
    """Raise unless the only missing keys are frozen parameters (a teacher rebuilt from its own source)
    or start with one of `allowed_missing`, and nothing is unexpected."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in missing if k not in frozen and not k.startswith(allowed_missing)]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not fit the model ({len(missing)} missing: {missing[:5]}, "
                              f"{len(unexpected)} unexpected: {list(unexpected)[:5]})")


def load_model_state(model: Any, state: dict[str, Any], source: str | Path,
                     allowed_missing: tuple[str, ...] = ()) -> None:
    """Load a (possibly frozen-part-free) state dict; anything else missing or unexpected is an error."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even when strict=False
        raise CheckpointError(f"{source}: does not fit the model: {err}") from err
    check_fit(model, missing, unexpected, source, allowed_missing)


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_last: int | None = None) -> Path:
    """Write `payload` atomically (temporary file, fsync, rename); then prune to the `keep_last` newest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        torch.save({"instvl_version": __version__, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if keep_last:
        for old in list_checkpoints(path.parent.parent)[:-keep_last]:
            old.unlink(missing_ok=True)
    log.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, with a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable instvl checkpoint "
                              f"({type(err).__name__}: {err})") from err


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: None, 'auto' (the newest in OUTPUT, if any) or a path."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no step-*.pt checkpoint in {path / CHECKPOINT_DIR}")
        return found
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path
