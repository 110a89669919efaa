"""Headless Chromium for tests of the HTML instvl writes (a system chromium; no network traffic of its own).

    require_chromium()                          # skip, or fail under CI=true, without a browser
    dom = dump_dom(page, tmp_path / "profile")  # the page after its scripts ran
"""

import shutil
import subprocess
from pathlib import Path

from instvl.testing.components import require_component

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def require_chromium() -> str:
    """The Chromium executable; skips the calling test (fails it under CI=true) when there is none."""
    require_component("Chromium", CHROMIUM is not None, "install it (apt-get install -y chromium)")
    return str(CHROMIUM)


def chromium(profile: Path, *args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile and no background network traffic."""
    command = [require_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after scripts ran, as a person's browser would hold it."""
    result = chromium(profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout
