"""Headless Chromium for tests of the HTML we write (Debian's chromium; the network here is closed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def chromium(profile: Path, *args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile and no background network traffic."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after scripts ran, as a person's browser would hold it."""
    result = chromium(profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout
