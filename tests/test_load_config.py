"""`instvl.config.load_config`: a preset, then typed values, then `a.b=c` overrides.

Not test_config.py: tests/flows/test_config.py has that name, and test modules need distinct names."""

import pytest

from instvl.config import ConfigError, load_config
from instvl.flows.config import BuildConfig


def test_values_are_set_as_given_then_overrides_apply():
    path = "/data/it's: a [path]"
    cfg = load_config(BuildConfig, "annotate/fake", ["flow.retries=5", "output=/elsewhere"],
                      values={"input": path, "output": path, "flow.runner.address": "auto"})
    assert cfg.input == path and cfg.output == "/elsewhere"
    assert cfg.flow.retries == 5 and cfg.flow.runner.address == "auto"


def test_a_value_below_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="'input' is not a section"):
        load_config(BuildConfig, "annotate/fake", values={"input": "x", "input.sub": 1})
    with pytest.raises(ConfigError, match="override 'input.sub=1'"):
        load_config(BuildConfig, "annotate/fake", ["input=x", "input.sub=1"])
