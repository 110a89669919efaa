"""A thin REST client for Label Studio: projects, local-files storage, tasks, annotations and exports.

Plain HTTP over httpx (the SDK's pins clash with our stack). The API token is read from an environment
variable named in the config and is kept out of logs, errors and repr. Transport failures become
`LabelStudioUnavailable` naming the URL; HTTP errors become `LabelStudioError` with the server's detail.
"""

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import Field

from instvl.config import BaseConfig

log = logging.getLogger(__name__)

PAGE_SIZE = 100


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
    folder holding the server's data dir or template cache (refused, see `qa.server.check_document_root`)."""
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


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class LabelStudioClient:
    """REST calls used by push, pull and the tests."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self._token = token
        self._http = _httpx().Client(base_url=self.url, timeout=timeout_s)
        self._authenticated = False

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LabelStudioClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _authenticate(self) -> None:
        # The header lives on the session only, never in arguments that tracebacks would print.
        if self._authenticated:
            return
        if _looks_like_jwt(self._token):
            # A personal access token is a refresh token: trade it for a short-lived access token.
            access = self._send("POST", "/api/token/refresh/", json={"refresh": self._token})["access"]
            self._http.headers["Authorization"] = f"Bearer {access}"
        else:
            self._http.headers["Authorization"] = f"Token {self._token}"
        self._authenticated = True

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One authenticated call; returns the decoded JSON body (None when empty)."""
        self._authenticate()
        return self._send(method, path, **kwargs)

    def get_media(self, url: str) -> Any:
        """GET a media URL of a task (the raw httpx response)."""
        self._authenticate()
        return self._http.get(url)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        httpx = _httpx()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is unavailable ({type(err).__name__} on {method} {path}): {err}"
            ) from None
        if response.status_code >= 400:
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} failed with HTTP "
                                   f"{response.status_code}: {_detail(response)}", response.status_code)
        return response.json() if response.content else None

    # -- projects -----------------------------------------------------------------------------------
    def projects(self) -> list[dict[str, Any]]:
        return self._paged("/api/projects", {}, "results")

    def find_project(self, title: str) -> dict[str, Any] | None:
        matches = [p for p in self.projects() if p.get("title") == title]
        return min(matches, key=lambda p: p["id"]) if matches else None

    def get_or_create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """The project called `title` (the oldest one if several), created when missing."""
        found = self.find_project(title)
        if found is not None:
            return found
        log.info("creating Label Studio project %r", title)
        return self.request("POST", "/api/projects", json={"title": title, "label_config": label_config})

    def update_label_config(self, project_id: int, label_config: str) -> dict[str, Any]:
        return self.request("PATCH", f"/api/projects/{project_id}", json={"label_config": label_config})

    # -- storage ------------------------------------------------------------------------------------
    def ensure_local_storage(self, project_id: int, path: str, title: str = "instvl media") -> dict[str, Any]:
        """A Local Files storage row covering `path`, which authorises the server to serve files under it."""
        rows = self.request("GET", "/api/storages/localfiles", params={"project": project_id}) or []
        for row in rows:
            if row.get("path") == path:
                return row
        return self.request("POST", "/api/storages/localfiles", json={
            "project": project_id, "path": path, "title": title[:256], "use_blob_urls": True,
            "regex_filter": r".*\.(mp4|jpg)$"})

    # -- tasks --------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks (with their predictions); returns the new task ids in order."""
        body = self.request("POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                            json=tasks)
        return list(body.get("task_ids") or [])

    def tasks(self, project_id: int, sample_id: str | None = None,
              fields: str = "all") -> list[dict[str, Any]]:
        """Tasks of a project, optionally only those whose data.sample_id equals `sample_id`."""
        params: dict[str, Any] = {"project": project_id, "fields": fields}
        if sample_id is not None:
            params["query"] = json.dumps({"filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:data.sample_id", "operator": "equal", "type": "String",
                 "value": sample_id}]}})
        return self._paged("/api/tasks", params, "tasks")

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
        return self.request("GET", f"/api/tasks/{task_id}")

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return self.request("GET", "/api/predictions", params={"task": task_id}) or []

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """What a reviewer's submit does: an annotation with `result` on the task."""
        return self.request("POST", f"/api/tasks/{task_id}/annotations", json={"result": result, **fields})

    def export(self, project_id: int, interpolate: bool = True) -> list[dict[str, Any]]:
        """Annotated tasks as JSON, with every frame of video tracks when `interpolate`."""
        params = {"exportType": "JSON", "interpolate_key_frames": str(interpolate).lower()}
        return self.request("GET", f"/api/projects/{project_id}/export", params=params) or []

    def users(self) -> dict[int, str]:
        """User id -> e-mail, to name reviewers."""
        body = self.request("GET", "/api/users")
        rows = body.get("results", []) if isinstance(body, dict) else body or []
        return {int(u["id"]): u.get("email") or u.get("username") or str(u["id"]) for u in rows}

    def _paged(self, path: str, params: dict[str, Any], key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in range(1, 1_000_000):
            body = self.request("GET", path, params={**params, "page": page, "page_size": PAGE_SIZE})
            batch = body if isinstance(body, list) else body.get(key) or []
            items += batch
            total = body.get("total", body.get("count")) if isinstance(body, dict) else None
            if isinstance(body, list) or not batch or total is None or len(items) >= total:
                break
        return items


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "validation_errors", "message") if body.get(k)]
        return "; ".join(parts) or json.dumps(body)[:300]
    return json.dumps(body)[:300]


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
