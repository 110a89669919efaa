"""require_component: a missing real component skips a test, except under CI=true where it fails it."""

import pytest

from instvl.testing.browser import CHROMIUM, require_chromium
from instvl.testing.components import in_ci, require_component


def test_an_available_component_lets_the_test_run(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_component("Thing", True, "install it") is None


def test_a_missing_component_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Thing is not available; apt-get install thing"):
        require_component("Thing", False, "apt-get install thing")


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_a_missing_component_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="Thing is not available.*CI=true"):
        require_component("Thing", False, "apt-get install thing")


def test_ci_false_is_not_ci(monkeypatch):
    monkeypatch.setenv("CI", "false")
    assert not in_ci()


def test_chromium_is_required_through_the_same_rule(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    if CHROMIUM is None:
        with pytest.raises(pytest.skip.Exception, match="Chromium"):
            require_chromium()
    else:
        assert require_chromium() == CHROMIUM
