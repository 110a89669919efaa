"""Typed configs: a pydantic base class, named YAML presets shipped as package data, `a.b=c` overrides."""

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="BaseConfig")


class ConfigError(ValueError):
    """A preset that cannot be found, a malformed override or a config that fails validation."""


class BaseConfig(BaseModel):
    """Base of every config: unknown keys are errors, values are immutable, field docs become help."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def preset_names(group: str | None = None) -> list[str]:
    """Names of the shipped presets, such as 'train/tiny', optionally within one group."""
    root = resources.files("instvl") / "configs"
    names = []
    for group_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not group_dir.is_dir() or (group and group_dir.name != group):
            continue
        names += [f"{group_dir.name}/{f.name[:-5]}" for f in group_dir.iterdir() if f.name.endswith(".yaml")]
    return sorted(names)


def preset_summary(name: str) -> str:
    """The first line of a shipped preset's leading comment ('' when it has none)."""
    text = (resources.files("instvl") / "configs" / f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def read_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Read a preset by name ('annotate/tiny') or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        ref = resources.files("instvl") / "configs" / f"{name_or_path}.yaml"
        if not ref.is_file():
            known = ", ".join(preset_names()) or "none"
            raise ConfigError(f"no config file or preset named {str(name_or_path)!r} (presets: {known})")
        text = ref.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(name_or_path)!r} must be a mapping, not {type(data).__name__}")
    return data


def set_field(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the field at a dotted key ('flow.runner.address') of a config dict in place, as is."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `a.b=c` override in place; the value is parsed as YAML (so 3, true, [1,2] work)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    try:
        set_field(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    except ConfigError as err:
        raise ConfigError(f"override {override!r}: {err}") from None


def load_config(cls: type[C], preset: str | Path | None = None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> C:
    """Build a validated `cls` from a preset (name or path), then `values` (dotted key -> value, set as
    is: a path stays a string whatever it holds), then `a.b=c` overrides (parsed as YAML)."""
    data = read_preset(preset) if preset else {}
    for key, value in (values or {}).items():
        set_field(data, key, value)
    for override in overrides:
        apply_override(data, override)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid config {str(preset or cls.__name__)!r}:\n{err}") from err


def config_hash(cfg: BaseModel) -> str:
    """A short, stable hash of a config's resolved values, recorded in provenance."""
    payload = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML, as `--print-config` shows it."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
