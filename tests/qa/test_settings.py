"""The `qa/local` preset (`qa/settings.py`): review media come from the source by default, `stored` keeps the
rows' own media, and nothing else is accepted."""

import pytest

from instvl.config import ConfigError, load_config
from instvl.qa.push import PushConfig


def test_review_media_come_from_the_source_unless_set_to_stored():
    cfg = load_config(PushConfig, "qa/local", ["root=ds"])
    assert (cfg.push.review_media, cfg.push.review_height) == ("source", 480)
    assert PushConfig(root="ds").push.review_media == "source"  # the preset says what the code does
    assert load_config(PushConfig, "qa/local", ["root=ds", "push.review_media=stored"]).push.review_media == \
        "stored"
    with pytest.raises(ConfigError, match="review_media"):
        load_config(PushConfig, "qa/local", ["root=ds", "push.review_media=original"])
