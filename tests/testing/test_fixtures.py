"""The pytest plugin as another project would use it: factories, the Prefect home, CI-strict components."""

import pytest

CONFTEST = 'pytest_plugins = ["instvl.testing.fixtures"]\n'

TESTS = '''
import os

from instvl.testing.components import require_component
from instvl.testing.datasets import rows_by_id


def test_factories(make_dataset, sample_factory, make_video):
    root = make_dataset(units=2, per_unit=2)
    assert sorted(rows_by_id(root)) == ["s-00000", "s-00001", "s-00002", "s-00003"]
    again = make_dataset(samples=[sample_factory(7, media_type="image", with_media=True)])
    assert again != root and list(rows_by_id(again)) == ["s-00007"]
    path, boxes = make_video("clips/a.mp4", num_frames=5)
    assert path.is_file() and boxes.shape == (5, 4)


def test_prefect_home_is_private():
    assert os.path.basename(os.environ["PREFECT_HOME"]).startswith("instvl-prefect-home-")
    assert "PREFECT_API_URL" not in os.environ


def test_needs_a_missing_component():
    require_component("Thing", False, "apt-get install thing")
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_project=TESTS)
    return pytester


def test_plugin_gives_factories_and_skips_missing_components(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")  # a developer's own server
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*Thing is not available; apt-get install thing*"])


def test_under_ci_a_missing_component_fails(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "missing_component")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CI=true: every real component must be installed*"])
