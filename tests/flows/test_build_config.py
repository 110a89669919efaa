"""BuildConfig: the annotation config plus the flow section, which changes no row and no config hash."""

import pytest

from instvl.annotate.config import AnnotateConfig
from instvl.annotate.run import AnnotateRunConfig
from instvl.config import ConfigError, config_hash, load_config
from instvl.flows.config import BuildConfig


@pytest.mark.parametrize("preset", ["annotate/fake", "annotate/tiny", "annotate/gpu", "annotate/gpu-server"])
def test_every_annotate_preset_loads_for_build_and_for_annotate_run(preset):
    build = load_config(BuildConfig, preset, ["input=in", "output=out"])
    run = load_config(AnnotateRunConfig, preset, ["input=in", "output=out"])
    assert "flow" not in run.model_dump()
    assert build.annotation() == run.annotation()
    assert config_hash(build.annotation()) == config_hash(run)  # the same rows, whichever command builds


def test_flow_settings_do_not_change_the_annotation():
    fast = BuildConfig(input="in", output="out")
    other = load_config(BuildConfig, None,
                        ["input=in", "output=out", "flow.retries=0", "flow.runner.kind=ray"])
    annotation = other.annotation()
    assert type(annotation) is AnnotateConfig and "flow" not in annotation.model_dump()
    assert annotation == fast.annotation() and config_hash(annotation) == config_hash(fast.annotation())
    plain = AnnotateConfig(input="in")
    assert plain.annotation() is plain


def test_annotate_config_itself_has_no_flow_section():
    with pytest.raises(ConfigError, match="flow"):
        load_config(AnnotateConfig, "annotate/gpu")
