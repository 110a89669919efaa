"""Open the HTML report in real headless Chromium and check what a person would see."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instvl.datasets.inspect import InspectConfig, main
from instvl.testing.browser import chromium, dump_dom

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("chromium_bin")]


@pytest.fixture
def report(make_dataset, sample_factory, tmp_path) -> Path:
    samples = [sample_factory(0, num_instances=2, with_media=True, width=96, height=64),
               sample_factory(1, media_type="image", num_instances=3, with_media=True, width=96, height=64)]
    root = make_dataset(samples=samples, quarantine=1)
    html = tmp_path / "site" / "report.html"
    cfg = InspectConfig(root=str(root), html=str(html), frames_per_sample=3, title="Browser check")
    assert main(cfg) == 0
    return html


def test_report_renders_in_chromium(report, tmp_path):
    dom = dump_dom(report, tmp_path / "profile-dom")
    assert "<title>Browser check</title>" in dom
    assert 'data-image-count="4"' in dom  # 3 video frames + 1 image
    assert 'data-images-loaded="4"' in dom and 'data-all-images-loaded="true"' in dom
    assert "scene 0 with 2 moving shapes" in dom and "scene 1 with 3 moving shapes" in dom
    assert "the green triangle number 2 slides right" in dom and "ID: 2 green triangle" in dom
    assert "zero-length file" in dom


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "report.png"
    result = chromium(tmp_path / "profile-shot", "--virtual-time-budget=5000", "--window-size=1200,1600",
                      "--hide-scrollbars", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    # the dark header band is drawn at the top of the page
    assert pixels[:40].mean() < 80
