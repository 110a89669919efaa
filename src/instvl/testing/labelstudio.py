"""A throwaway Label Studio server for tests, and a scripted reviewer that answers its tasks.

The server is the real one (`instvl.qa.server`), started from .venv-labelstudio or `label-studio` on
PATH with a test-only admin on 127.0.0.1. Its data dir is copied from a template initialised once per
Label Studio version under ~/.cache/instvl (INSTVL_TEST_CACHE overrides), so a session pays seconds,
not a minute of migrations.
"""

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instvl.qa.client import LabelStudioClient
from instvl.qa.convert import VERDICT
from instvl.qa.server import INSTALL_HINT, Credentials, LabelStudioServer, find_label_studio
from instvl.qa.settings import ServeStepConfig
from instvl.testing.components import require_component

TOKEN_ENV = "INSTVL_TEST_LS_TOKEN"
TEST_TOKEN = "instvl-test-token-0123456789"
TEST_USER, TEST_PASSWORD = "admin@instvl.test", "instvl-test-password"


def label_studio_available() -> bool:
    try:
        find_label_studio()
    except FileNotFoundError:
        return False
    return True


@contextmanager
def label_studio_server(data_dir: Path, document_root: Path) -> Iterator[LabelStudioServer]:
    """A healthy server with the test admin, its token exported as TOKEN_ENV; stopped (by PID) after.

    Skips the calling test (fails it under CI=true) when no Label Studio is installed.
    """
    require_component("Label Studio", label_studio_available(), f"install it with: {INSTALL_HINT}")
    cache = os.environ.get("INSTVL_TEST_CACHE", str(Path.home() / ".cache" / "instvl"))
    options = ServeStepConfig(data_dir=str(data_dir), port=None, template_cache=cache, start_timeout_s=300)
    previous = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TEST_TOKEN
    try:
        server = LabelStudioServer(options, Credentials(TEST_USER, TEST_PASSWORD, TEST_TOKEN), document_root)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        if previous is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = previous


def verdict(choice: str, to_name: str) -> dict[str, Any]:
    """The verdict region a reviewer adds ('accept', 'reject', ...)."""
    return {"id": "verdict", "from_name": VERDICT, "to_name": to_name, "type": "choices",
            "value": {"choices": [choice]}}


def reviewed_result(client: LabelStudioClient, task_id: int, choice: str,
                    edit: Callable[[list[dict]], None] | None = None) -> list[dict[str, Any]]:
    """The task's prediction as a reviewer submits it: changed in place by `edit` if given, plus a verdict."""
    result = copy.deepcopy(client.task(task_id)["predictions"][0]["result"])
    if edit:
        edit(result)
    to_name = result[0]["to_name"]
    return [dict(item, origin="manual") for item in result] + [verdict(choice, to_name)]
