"""Every shipped preset validates against the config class of the command(s) that use it.

A preset that is some command's default must validate against each such command; any other preset
must validate against at least one command of its group. Presets whose command module is not written
yet are skipped; once the module exists, a preset that does not validate fails.
"""

import importlib
import importlib.util

import pytest

from instvl.cli import COMMANDS, Command
from instvl.config import load_config, preset_names


def commands_for(preset: str) -> tuple[list[Command], bool]:
    """The commands a preset belongs to, and whether it must validate against all of them."""
    defaults = [c for c in COMMANDS if c.default_preset == preset]
    if defaults:
        return defaults, True
    group = preset.split("/", 1)[0]
    return [c for c in COMMANDS if c.preset_group == group
            or (c.default_preset and c.default_preset.split("/", 1)[0] == group)], False


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("preset", preset_names())
def test_preset_validates(preset):
    commands, all_required = commands_for(preset)
    assert commands, f"preset {preset!r} belongs to no command (no command's default preset is in its group)"
    written = [c for c in commands if _module_exists(c.module)]
    if not written:
        pytest.skip(f"{', '.join(sorted({c.module for c in commands}))} not written yet")
    errors = {}
    for cmd in written:
        config_class = getattr(importlib.import_module(cmd.module), cmd.config_class)
        # Required positionals (ROOT, OUT...) come from the command line, never from a preset.
        positionals = {name: "placeholder" for name in cmd.positionals if not name.endswith("?")}
        try:
            load_config(config_class, preset, values=positionals)
        except Exception as err:  # noqa: BLE001 (collect every failure for the message)
            errors[f"{cmd.module}.{cmd.config_class}"] = err
    if all_required:
        assert not errors, f"preset {preset!r} is invalid for: {errors}"
    else:
        assert len(errors) < len(written), f"preset {preset!r} fits none of its group's commands: {errors}"


def test_default_presets_exist_once_their_module_does():
    names = set(preset_names())
    for cmd in COMMANDS:
        if cmd.default_preset and _module_exists(cmd.module):
            assert cmd.default_preset in names, \
                f"{cmd.name}: default preset {cmd.default_preset!r} is not shipped"
