"""Label Studio through its SDK (label-studio-sdk 2.x): projects, storage, tasks, annotations, exports.

`LabelStudioClient` wraps the SDK's `LabelStudio` client with what instvl needs on top: one error type
per failure (`LabelStudioError` with the server's detail, `LabelStudioUnavailable` naming the URL when
the server cannot be reached), plain dicts instead of SDK models, and an import that is sent exactly
once (no SDK retry: a retried import whose first answer was lost creates the tasks twice; `qa.push`
looks the tasks up by key instead). The API token is read from an environment variable named in the
config; the SDK trades a personal access token for a Bearer token by itself. The token is kept out of
logs, errors and repr.
"""

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import Field

from instvl.config import BaseConfig
from instvl.deps import require

log = logging.getLogger(__name__)

PAGE_SIZE = 100
READ_RETRIES = 2
"""Retries of reads (idempotent) on a dropped connection or a 5xx; writes are sent once."""
SEND_ONCE: dict[str, Any] = {"max_retries": 0}


class LabelStudioError(RuntimeError):
    """The server answered with an HTTP error."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class LabelStudioUnavailable(LabelStudioError, ConnectionError):
    """The server could not be reached (refused, reset, timed out)."""


class ClientConfig(BaseConfig):
    """Where the Label Studio server is and how to talk to it (the `server:` section of `qa/local`)."""

    url: str = "http://127.0.0.1:8080"
    """Base URL of the server."""
    token_env: str = "LABEL_STUDIO_API_KEY"
    """Name of the environment variable holding the API token (legacy token or personal access token)."""
    timeout_s: float = Field(30.0, gt=0)
    """Per-request timeout."""
    document_root: str | None = None
    """The server's review-media folder (its LOCAL_FILES_DOCUMENT_ROOT): push links media into it, and
    every reviewer can read all of it. Null: `<serve.data_dir>-media`. Never `/`, the home folder, or a
    folder holding the server's data dir or template cache (refused, see
    `qa.confinement.check_document_root`)."""
    video_project: str = Field("instvl-video", min_length=3, max_length=40)
    """Title prefix of the projects holding video review tasks (one per frame rate: '-8fps' is appended)."""
    image_project: str = Field("instvl-image", min_length=3, max_length=50)
    """Title of the project holding image review tasks."""

    def build(self) -> "LabelStudioClient":
        token = os.environ.get(self.token_env, "")
        if not token:
            raise ValueError(f"set the environment variable {self.token_env} to the Label Studio API token")
        return LabelStudioClient(self.url, token, self.timeout_s)


def _httpx():
    import httpx

    return httpx


def wait_healthy(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll GET /health until it answers 200, the process dies or `timeout_s` passes."""
    httpx = _httpx()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise LabelStudioUnavailable(f"Label Studio at {url} exited before it became healthy")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise LabelStudioUnavailable(f"Label Studio at {url} was not healthy after {timeout_s:.0f} s")


def _plain(value: Any) -> Any:
    """An SDK model (or a list of them) as plain JSON-like data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class LabelStudioClient:
    """The calls push, pull and the tests make, through the SDK."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0, http: Any = None):
        self._api_error = require("label_studio_sdk.core.api_error", "labelstudio").ApiError
        self.url = url.rstrip("/")
        self._http = http or _httpx().Client(timeout=timeout_s)
        # Built at the first call: the SDK checks a JWT-shaped token when it is made, and that failure
        # must come out as a LabelStudioError like any other refusal.
        self._make_sdk = lambda: require("label_studio_sdk", "labelstudio").LabelStudio(
            base_url=self.url, api_key=token, timeout=timeout_s, max_retries=READ_RETRIES,
            httpx_client=self._http)
        self._built: Any = None

    @property
    def _sdk(self) -> Any:
        if self._built is None:
            self._built = self._make_sdk()
        return self._built

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LabelStudioClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()` (SDK calls), its result as plain data and its failures as ours; `what` ('GET /api/projects')
        names the call in errors. `fn` reaches the SDK through `self._sdk`, made at the first call."""
        httpx = _httpx()
        try:
            return _plain(fn())
        except self._api_error as err:
            raise LabelStudioError(f"Label Studio at {self.url}: {what} failed with HTTP {err.status_code}: "
                                   f"{_detail(err.body)}", err.status_code) from None
        except httpx.TransportError as err:
            reason = f"{type(err).__name__} on {what}"
            message = f"Label Studio at {self.url} is unavailable ({reason}): {err}"
            raise LabelStudioUnavailable(message) from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any endpoint the SDK has no method for, through its authenticated HTTP client (`params`,
        `json`); the decoded JSON body (None when empty). Only reads are retried."""
        def send() -> Any:
            http = self._sdk._client_wrapper.httpx_client  # the SDK's own client: auth, base URL, retries
            response = http.request(path.lstrip("/"), method=method,
                                    request_options=None if method == "GET" else SEND_ONCE, **kwargs)
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = response.text[:300]
                raise self._api_error(status_code=response.status_code, body=body)
            return response.json() if response.content else None

        return self.call(f"{method} {path}", send)

    def whoami(self) -> dict[str, Any]:
        """The token's user."""
        return self.call("GET /api/current-user/whoami", lambda: self._sdk.users.whoami())

    def get_media(self, url: str) -> Any:
        """GET a media URL of a task with the client's credentials (the raw httpx response)."""
        headers = self.call(f"GET {url}", lambda: self._sdk._client_wrapper.get_headers())  # the SDK's auth
        return self._http.get(f"{self.url}{url}" if url.startswith("/") else url, headers=headers)

    # -- projects -----------------------------------------------------------------------------------
    def projects(self) -> list[dict[str, Any]]:
        return self.call("GET /api/projects", lambda: list(self._sdk.projects.list(page_size=PAGE_SIZE)))

    def find_project(self, title: str) -> dict[str, Any] | None:
        matches = [p for p in self.projects() if p.get("title") == title]
        return min(matches, key=lambda p: p["id"]) if matches else None

    def get_or_create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """The project called `title` (the oldest one if several), created when missing."""
        found = self.find_project(title)
        if found is not None:
            return found
        log.info("creating Label Studio project %r", title)
        return self.call("POST /api/projects", lambda: self._sdk.projects.create(
            title=title, label_config=label_config, request_options=SEND_ONCE))

    def update_label_config(self, project_id: int, label_config: str) -> dict[str, Any]:
        return self.call(f"PATCH /api/projects/{project_id}", lambda: self._sdk.projects.update(
            id=project_id, label_config=label_config))

    # -- storage ------------------------------------------------------------------------------------
    def ensure_local_storage(self, project_id: int, path: str, title: str = "instvl media") -> dict[str, Any]:
        """A Local Files storage row covering `path`, which authorises the server to serve files under it."""
        rows = self.call("GET /api/storages/localfiles",
                         lambda: self._sdk.import_storage.local.list(project=project_id))
        for row in rows or []:
            if row.get("path") == path:
                return row
        return self.call("POST /api/storages/localfiles", lambda: self._sdk.import_storage.local.create(
            project=project_id, path=path, title=title[:256], use_blob_urls=True,
            regex_filter=r".*\.(mp4|jpg)$", request_options=SEND_ONCE))

    # -- tasks --------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks (with their predictions), sent once; returns the new task ids in order."""
        body = self.call(f"POST /api/projects/{project_id}/import", lambda: self._sdk.projects.import_tasks(
            id=project_id, request=tasks, return_task_ids=True, request_options=SEND_ONCE))
        return [int(i) for i in body.get("task_ids") or []]

    def tasks(self, project_id: int, sample_id: str | None = None,
              fields: str = "all") -> list[dict[str, Any]]:
        """Tasks of a project, optionally only those whose data.sample_id equals `sample_id`."""
        query = None
        if sample_id is not None:
            query = json.dumps({"filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:data.sample_id", "operator": "equal", "type": "String",
                 "value": sample_id}]}})
        return self.call("GET /api/tasks", lambda: list(self._sdk.tasks.list(
            project=project_id, fields=fields, query=query, page_size=PAGE_SIZE)))

    def task_ids_by_key(self, project_id: int) -> dict[tuple[str, str, str], list[int]]:
        """(dataset id, sample id, prediction fingerprint) -> ids of the tasks carrying that key, for the
        whole project (tasks without the three keys in their data are left out)."""
        index: dict[tuple[str, str, str], list[int]] = {}
        for task in self.tasks(project_id, fields="task_only"):
            data = task.get("data") or {}
            key = tuple(str(data.get(k) or "") for k in ("dataset_id", "sample_id", "fingerprint"))
            if all(key):
                index.setdefault((key[0], key[1], key[2]), []).append(int(task["id"]))
        return {key: sorted(ids) for key, ids in index.items()}

    def task(self, task_id: int) -> dict[str, Any]:
        return self.call(f"GET /api/tasks/{task_id}", lambda: self._sdk.tasks.get(id=str(task_id)))

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return self.call("GET /api/predictions", lambda: self._sdk.predictions.list(task=task_id)) or []

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """What a reviewer's submit does: an annotation with `result` on the task."""
        return self.call(f"POST /api/tasks/{task_id}/annotations", lambda: self._sdk.annotations.create(
            id=task_id, result=result, request_options=SEND_ONCE, **fields))

    def export(self, project_id: int, interpolate: bool = True) -> list[dict[str, Any]]:
        """Annotated tasks as JSON, with every frame of video tracks when `interpolate`."""
        options = {"additional_query_parameters": {"interpolate_key_frames": str(interpolate).lower()}}

        def download() -> list[dict[str, Any]]:
            chunks = self._sdk.projects.exports.download_sync(project_id, export_type="JSON",
                                                              request_options=options)
            body = b"".join(chunks)
            return json.loads(body) if body else []

        return self.call(f"GET /api/projects/{project_id}/export", download)

    def users(self) -> dict[int, str]:
        """User id -> e-mail, to name reviewers."""
        rows = self.call("GET /api/users", lambda: self._sdk.users.list()) or []
        return {int(u["id"]): u.get("email") or u.get("username") or str(u["id"]) for u in rows}


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "validation_errors", "message") if body.get(k)]
        return "; ".join(parts) or json.dumps(body)[:300]
    return str(body)[:300]


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
