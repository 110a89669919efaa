"""Skip, or in CI fail, a test whose real component (Label Studio, Chromium, Prefect, Ray, sam2) is missing.

On a developer's machine a missing component skips the test with the install hint. Under `CI=true`
every component is expected, so a missing one fails the test: a silently skipped suite is not green.

    require_component("Chromium", CHROMIUM is not None, "apt-get install -y chromium")
"""

import os

import pytest


def in_ci() -> bool:
    """True where the environment says it is CI (`CI=true`, as GitHub Actions and most runners set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_component(name: str, available: bool, hint: str) -> None:
    """Skip the calling test (fail it under CI=true) unless the real component `name` is available."""
    if available:
        return
    message = f"{name} is not available; {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: every real component must be installed)", pytrace=False)
    pytest.skip(message)
