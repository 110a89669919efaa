"""Starting a run from pretrained weights (`run.init_from`): an instvl checkpoint or a UMT checkpoint.

Only weights are taken; optimizer, schedule, step and data position start fresh (that is
`run.resume`'s job). The load is strict: every trainable weight of the model must come from the file,
except the parts named in `run.init_skip` (key prefixes, e.g. `text.`), which keep their fresh
initialisation. Frozen parameters (a teacher rebuilt from its own source) may always be missing.

UMT checkpoints (github.com/OpenGVLab/unmasked_teacher, the stage-2 `multi_modality` model or the
stage-1 `single_modality` encoder) are mapped onto the student ViT:

| UMT key (after `module.`; prefix `vision_encoder.encoder.` or `encoder.`) | InstAP key |
|---|---|
| `patch_embed.proj.{weight,bias}` (Conv3d, tubelet x patch x patch) | `student.patch_embed.*` |
| `blocks.i.norm1.*`, `blocks.i.norm2.*` | `student.blocks.i.norm1.*`, `.norm2.*` |
| `blocks.i.attn.qkv.weight` | `student.blocks.i.attn.qkv.weight` |
| `blocks.i.attn.q_bias`, `blocks.i.attn.v_bias` (no k bias) | `student.blocks.i.attn.qkv.bias` = [q, 0, v] |
| `blocks.i.attn.proj.*` | `student.blocks.i.attn.proj.*` |
| `blocks.i.mlp.fc1.*`, `blocks.i.mlp.fc2.*` | `student.blocks.i.mlp.0.*`, `.mlp.2.*` |
| `blocks.i.gamma_1`, `blocks.i.gamma_2` (layer scale) | folded into `attn.proj` and `mlp.2` (exact) |
| `norm.*` | `student.norm.*` |
| `vision_encoder.pool_norm.*` | `pool_norm.*` |
| `vision_proj.*` | `vision_proj.*` |

Everything else is dropped and counted in the log: the text encoder (UMT's BERT embeds text with its
first 9 layers and fuses the rest with video, so its weights do not carry over one to one), the CLIP
alignment decoders (`clip_decoder.*`: Linear then LayerNorm, the reverse of `align_heads`), `temp`,
`itm_head`, the teacher, and the position table: UMT's is a fixed 1-D sin-cos over the flattened token
index (not stored) or a learned table with a class slot, neither of which is the student's factorised
space-time table, so a UMT-initialised student adapts to its position embedding during training. A UMT
init therefore names the unmapped parts in `run.init_skip`, typically
`[text., text_proj., align_heads., instance_attn., temp_glob., temp_inst.]`.
"""

import logging
import re
from pathlib import Path
from typing import Any, Literal

from instvl.deps import require
from instvl.train import checkpoint as ckpt

torch = require("torch", "train")
log = logging.getLogger(__name__)
InitFormat = Literal["auto", "instvl", "umt"]

_UMT_ENCODER = re.compile(r"^(?:vision_encoder\.encoder\.|encoder\.)(.+)$")
_UMT_RENAMES = (
    (re.compile(r"^patch_embed\.proj\.(weight|bias)$"), r"patch_embed.\1"),
    (re.compile(r"^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$"), r"blocks.\1.\2.\3"),
    (re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"), r"blocks.\1.attn.qkv.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$"), r"blocks.\1.attn.proj.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$"), r"blocks.\1.mlp.0.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$"), r"blocks.\1.mlp.2.\2"),
    (re.compile(r"^norm\.(weight|bias)$"), r"norm.\1"),
)
_UMT_HEADS = {"vision_encoder.pool_norm.weight": "pool_norm.weight",
              "vision_encoder.pool_norm.bias": "pool_norm.bias",
              "vision_proj.weight": "vision_proj.weight", "vision_proj.bias": "vision_proj.bias"}


def umt_to_instap(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A UMT state dict in InstAP naming (table in the module docstring), and the UMT keys it dropped."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    mapped: dict[str, Any] = {}
    dropped: list[str] = []
    biases: dict[str, dict[str, Any]] = {}
    scales: dict[str, Any] = {}
    for key, value in state.items():
        if key in _UMT_HEADS:
            mapped[_UMT_HEADS[key]] = value
            continue
        match = _UMT_ENCODER.match(key)
        rest = match.group(1) if match else ""
        if m := re.match(r"^blocks\.(\d+)\.attn\.(q_bias|v_bias)$", rest):
            biases.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        if m := re.match(r"^blocks\.(\d+)\.(gamma_1|gamma_2)$", rest):
            scales[f"{m.group(1)}.{m.group(2)}"] = value
            continue
        target = next((rule.sub(repl, rest) for rule, repl in _UMT_RENAMES if rule.match(rest)), None)
        if target is None:
            dropped.append(key)
        else:
            mapped[f"student.{target}"] = value
    for block, pair in biases.items():
        q_bias = pair.get("q_bias")
        v_bias = pair.get("v_bias")
        if q_bias is None or v_bias is None:
            raise ckpt.CheckpointError(f"UMT block {block} has only one of q_bias and v_bias")
        qkv_bias = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        mapped[f"student.blocks.{block}.attn.qkv.bias"] = qkv_bias
    for key in [k for k in mapped if k.endswith(".attn.qkv.weight")]:
        # UMT without qkv_bias has no bias at all: a zero bias is the same layer.
        mapped.setdefault(key.replace(".weight", ".bias"), mapped[key].new_zeros(mapped[key].shape[0]))
    for name, gamma in scales.items():
        block, which = name.split(".")
        layer = f"student.blocks.{block}." + ("attn.proj" if which == "gamma_1" else "mlp.2")
        # x + gamma * (W h + b) == x + (diag(gamma) W) h + gamma * b
        mapped[f"{layer}.weight"] = mapped[f"{layer}.weight"] * gamma[:, None]
        mapped[f"{layer}.bias"] = mapped[f"{layer}.bias"] * gamma
    return mapped, dropped


def _read(path: Path) -> dict[str, Any]:
    """The file's contents, loaded weights-only (a pickle of arbitrary objects is refused, not run)."""
    if not path.is_file():
        raise ckpt.CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for foreign or corrupt files
        raise ckpt.CheckpointError(
            f"{path}: cannot be read weights-only ({type(err).__name__}: {err}); if it is a UMT checkpoint "
            "with pickled objects, re-save just its state dict: torch.save(torch.load(f)['model'], out)"
        ) from err


def _state_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The state dict inside a checkpoint payload (`model`, `module`, `state_dict`, or the payload)."""
    for key in ("model", "module", "state_dict"):
        if isinstance(payload.get(key), dict):
            return payload[key]
    return payload


def detect_format(payload: dict[str, Any]) -> Literal["instvl", "umt"]:
    """'instvl' for files written by `instvl train`, 'umt' for UMT naming; an error otherwise."""
    if "instvl_version" in payload:
        return "instvl"
    keys = [k.removeprefix("module.") for k in _state_of(payload)]
    if any(_UMT_ENCODER.match(k) for k in keys):
        return "umt"
    raise ckpt.CheckpointError(f"cannot tell the checkpoint format from its keys ({keys[:3]}); set "
                               "run.init_format")


def init_weights(model: Any, source: str | Path, fmt: InitFormat = "auto",
                 skip: tuple[str, ...] = ()) -> None:
    """Load the weights of `source` (a file, or a run folder's newest checkpoint) into `model`, strictly
    except the key prefixes in `skip` and frozen parameters (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        found = ckpt.latest_checkpoint(path)
        if found is None:
            raise ckpt.CheckpointError(f"{path}: no step-*.pt checkpoint in {path / ckpt.CHECKPOINT_DIR}")
        path = found
    payload = _read(path)
    kind = detect_format(payload) if fmt == "auto" else fmt
    state = _state_of(payload)
    if kind == "umt":
        state, dropped = umt_to_instap(state)
        log.info("UMT checkpoint %s: %d weights mapped, %d dropped (e.g. %s)", path, len(state),
                 len(dropped), dropped[:3])
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    ckpt.load_model_state(model, state, path, allowed_missing=skip)
    log.info("initialised the model from %s (%s weights; kept fresh: %s)", path, kind, list(skip) or "none")
