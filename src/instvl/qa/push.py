"""`instvl qa push ROOT`: send routed samples to Label Studio as review tasks with our predictions.

Media are written to ROOT/media/ (atomically, once: `qa.review_media`, by default each clip made again
from its source file at `push.review_height`, else the row's stored media), then hard-linked (or copied)
into this dataset's folder under the server's review-media root (`qa.confinement.review_folder`), the only
folder the server serves; a local-files storage row on that folder lets reviewers load them. A
task is identified by (dataset id, sample id, prediction fingerprint), all three in its `data`: the
dataset id names the dataset's lineage (made from the root's path at its first push, kept in the push
state, which `qa pull` carries to the new version), and the fingerprint the exact row pushed. A key that
already has a task (in the push state or on the server) is never imported again; the same clips annotated
into another dataset, or annotated again, get tasks of their own. The push state,
ROOT/qa/push_state.json, is rewritten atomically after every batch, so a push cut short by the server
going away resumes where it stopped. Every push first checks the token with the server (also one with
nothing new to send), and refuses a dataset root inside the review-media root
(`qa.confinement.check_dataset_root`).
"""

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from instvl.datasets import layout
from instvl.datasets.layout import atomic_write_bytes
from instvl.datasets.reader import ShardReader
from instvl.datasets.schema import ProvenanceRow, QCRow, SampleRow
from instvl.qa.client import LabelStudioClient, LabelStudioError, LabelStudioUnavailable, chunks
from instvl.qa.confinement import check_dataset_root, review_folder, review_media_root, stage_file
from instvl.qa.convert import IMAGE_KEY, VIDEO_KEY, prediction_fingerprint, review_fps, row_to_result
from instvl.qa.projects import ensure_project, project_title
from instvl.qa.review_media import REVIEW_COLUMNS, SourceFiles, review_media
from instvl.qa.routing import route_row
from instvl.qa.settings import PushStepConfig, QAConfig

log = logging.getLogger(__name__)

META_COLUMNS = ["sample_id", "media_type", "width", "height", "fps", "num_frames", "media_format",
                "global_caption", "instances", "qc", "provenance"]


class PushConfig(QAConfig):
    """`instvl qa push ROOT`: send routed samples of a dataset to Label Studio for review."""

    root: str
    """The dataset root whose samples are pushed."""


class PushInterrupted(RuntimeError):
    """The server went away during a push; the state file lets a rerun resume."""


@dataclass
class PushSummary:
    selected: int = 0
    pushed: int = 0
    already_there: int = 0
    no_media: list[str] = field(default_factory=list)
    from_stored: list[str] = field(default_factory=list)
    """Samples reviewed on their stored media because their source could not be used (`review_media`)."""
    projects: dict[str, int] = field(default_factory=dict)


def path_dataset_id(root: Path) -> str:
    """The dataset id a root gets at its first push: a digest of its resolved path."""
    return hashlib.sha256(str(root.expanduser().resolve()).encode()).hexdigest()[:16]


def task_key(sample_id: str, fingerprint: str) -> str:
    """The push state's key of a task within one dataset lineage."""
    return f"{sample_id}@{fingerprint}"


class PushState:
    """The dataset id, and task key -> task of one server, persisted in ROOT/qa/push_state.json."""

    def __init__(self, root: Path, server_url: str):
        self.path, self.server_url = root / layout.PUSH_STATE_FILE, server_url
        self.data: dict[str, Any] = {"version": 2, "servers": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError as err:
                raise ValueError(f"{self.path}: push state is not valid JSON ({err})") from None
        self.dataset_id: str = self.data.setdefault("dataset_id", path_dataset_id(root))
        self.server = self.data["servers"].setdefault(server_url, {"projects": {}, "tasks": {}})

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.server["tasks"]

    def task_of(self, row: SampleRow, fingerprint: str) -> dict[str, Any] | None:
        return self.tasks.get(task_key(row["sample_id"], fingerprint))

    def record(self, row: "PushRow", task_id: int, project: dict[str, Any]) -> None:
        self.tasks[task_key(row["sample_id"], row["fingerprint"])] = {
            "sample_id": row["sample_id"], "fingerprint": row["fingerprint"], "task_id": int(task_id),
            "project_id": int(project["id"]), "project": project["title"],
            "route_reasons": row["route_reasons"], "pushed_at": datetime.now(UTC).isoformat()}

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())


def load_push_state(root: str | Path, server_url: str) -> PushState:
    return PushState(Path(root), server_url)


class PushRow(SampleRow, total=False):
    """A selected row, the reasons it goes to review and the fingerprint of its prediction."""

    route_reasons: list[str]
    fingerprint: str


def model_version(row: SampleRow) -> str:
    """The provenance of the predictions: the backends and models that made them."""
    prov: ProvenanceRow = row.get("provenance") or {}
    models = ",".join(f"{kv['key']}={kv['value']}" for kv in prov.get("models") or [])
    return (models or f"instvl-{prov.get('instvl_version')}:{prov.get('config_hash')}")[:200]


def select_rows(root: Path, cfg: PushConfig) -> list[PushRow]:
    """Rows not reviewed yet that were routed to review (or all of them), with their reasons.

    The reasons are the ones annotation stored in qc.route_reasons; with `push.reroute` they are
    decided again here with this config's `routing` thresholds.
    """
    selected: list[PushRow] = []
    for row in ShardReader(root, columns=META_COLUMNS).iter_rows():
        qc: QCRow = row.get("qc") or {}
        if (qc.get("status") or "auto") != "auto":
            continue
        reasons = route_row(row, cfg.routing) if cfg.push.reroute else list(qc.get("route_reasons") or [])
        if reasons or cfg.push.select == "all":
            selected.append({**row, "route_reasons": reasons, "fingerprint": prediction_fingerprint(row)})
    return selected


def write_media(root: Path, wanted: dict[str, PushRow], review_dir: Path,
                cfg: PushStepConfig) -> dict[str, tuple[Path, str]]:
    """The review media of the `wanted` samples (`qa.review_media`, written when missing) linked into
    `review_dir`: sample id -> (staged file, 'source' or 'stored'); samples without any are left out."""
    staged: dict[str, tuple[Path, str]] = {}
    sources = SourceFiles()
    for row in ShardReader(root, columns=REVIEW_COLUMNS).iter_rows():
        if row["sample_id"] not in wanted:
            continue
        made = review_media(root, row, cfg.review_media, cfg.review_height, sources)
        if made is not None:
            staged[row["sample_id"]] = (stage_file(made[0], review_dir), made[1])
    return staged


def task_for(row: PushRow, staged: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """A task: the URL of its `staged` media served from local files, its key (dataset id, sample id,
    fingerprint), the routing reasons and our prediction."""
    relative = staged.relative_to(ctx["document_root"])
    key = VIDEO_KEY if row["media_type"] == "video" else IMAGE_KEY
    scores = [float(i.get("score") or 0) for i in row.get("instances") or []]
    shown = [f"i{i['instance_id']} {i.get('phrase')}: {float(i.get('score') or 0):.2f}"
             for i in row.get("instances") or []]
    data = {key: f"/data/local-files/?d={quote(str(relative), safe='/')}", "sample_id": row["sample_id"],
            "dataset_id": ctx["dataset_id"], "fingerprint": row["fingerprint"],
            "route_reasons": "; ".join(row["route_reasons"]) or "-", "scores": "; ".join(shown) or "-"}
    prediction = {"model_version": model_version(row), "score": sum(scores) / len(scores) if scores else 0.0,
                  "result": row_to_result(row)}
    return {"data": data, "predictions": [prediction]}


ProjectKey = tuple[str, str, float | None]
"""(project title, media type, fps or None for images)."""


def group_by_project(rows: list[PushRow], cfg: PushConfig) -> dict[ProjectKey, list[PushRow]]:
    groups: dict[ProjectKey, list[PushRow]] = {}
    for row in rows:
        fps = review_fps(row) if row["media_type"] == "video" else None
        key = (project_title(cfg.server, row["media_type"], fps), row["media_type"], fps)
        groups.setdefault(key, []).append(row)
    return groups


def import_once(client: LabelStudioClient, project_id: int, rows: list[PushRow], ctx: dict[str, Any],
                attempts: int = 3) -> list[int]:
    """Import the tasks of `rows` so that each key ends with exactly one task; returns their ids in order.

    The import request is never retried blindly (the client sends it once): when its answer is lost
    (timeout, dropped connection, a 5xx from a proxy) the server may have created the tasks anyway, so
    they are looked up by key first and only the missing ones are imported again.
    """
    keys = [(ctx["dataset_id"], r["sample_id"], r["fingerprint"]) for r in rows]
    tasks = dict(zip(keys, (task_for(r, ctx["staged"][r["sample_id"]][0], ctx) for r in rows), strict=True))
    ids: dict[tuple[str, str, str], int] = {}
    for attempt in range(attempts):
        todo = [key for key in keys if key not in ids]
        if not todo:
            break
        try:
            ids.update(zip(todo, client.import_tasks(project_id, [tasks[k] for k in todo]), strict=True))
        except LabelStudioError as err:
            if (err.status_code is not None and err.status_code < 500) or attempt + 1 == attempts:
                raise  # refused (asking again gets the same answer), or out of attempts
            log.warning("import of %d task(s) into project %s got no answer (%s); looking them up before "
                        "importing the missing ones again", len(todo), project_id, err)
            time.sleep(ctx.get("lookup_delay_s", 1.0) * (attempt + 1))  # let a slow import finish first
            index = client.task_ids_by_key(project_id)
            ids.update({key: index[key][0] for key in todo if index.get(key)})
    return [ids[key] for key in keys]


def push_group(client: LabelStudioClient, state: PushState, rows: list[PushRow], key: tuple,
               ctx: dict[str, Any]) -> tuple[int, int]:
    """Push the rows of one project in batches; returns (tasks created, tasks found on the server)."""
    title, media_type, fps = key
    phrases = {i["phrase"] for r in rows for i in r.get("instances") or [] if i.get("phrase")}
    project = ensure_project(client, title, media_type, phrases, fps)
    client.ensure_local_storage(project["id"], str(ctx["media_dir"]),
                                title=f"instvl media {ctx['root'].name}")
    state.server["projects"][title] = project["id"]
    on_server = client.task_ids_by_key(project["id"])
    pushed = found = 0
    for batch in chunks(rows, ctx["batch_size"]):
        todo = []
        for row in batch:
            ids = on_server.get((ctx["dataset_id"], row["sample_id"], row["fingerprint"]))
            if ids:  # created by an earlier, interrupted push
                state.record(row, ids[0], project)
                found += 1
            else:
                todo.append(row)
        if todo:
            ids = import_once(client, project["id"], todo, ctx)
            for row, task_id in zip(todo, ids, strict=True):
                state.record(row, task_id, project)
            pushed += len(todo)
        state.save()
        ctx["on_batch"](state)
    return pushed, found


def authenticate(client: LabelStudioClient, token_env: str) -> str:
    """The e-mail of the token's user; LabelStudioError naming the variable when the server refuses it."""
    try:
        me = client.whoami()
    except LabelStudioError as err:  # LabelStudioUnavailable (no status) passes through unchanged
        if err.status_code in (401, 403):
            raise LabelStudioError(f"the token in ${token_env} was refused: {err}", err.status_code) from None
        raise
    return str((me or {}).get("email") or (me or {}).get("username") or "")


def push_dataset(cfg: PushConfig, client: LabelStudioClient | None = None,
                 on_batch: Callable[[PushState], None] = lambda state: None) -> PushSummary:
    """Push the routed samples of `cfg.root`; see the module docstring."""
    root = Path(cfg.root)
    if not (root / layout.SHARDS_DIR).is_dir():
        raise FileNotFoundError(f"{root}: not a dataset root (no shards/ folder)")
    document_root = review_media_root(cfg)
    check_dataset_root(root, document_root)
    client = client or cfg.server.build()
    authenticate(client, cfg.server.token_env)  # every push, also one with nothing new to send
    state = load_push_state(root, client.url)
    media_dir = review_folder(document_root, root)
    ctx: dict[str, Any] = {"root": root, "document_root": document_root, "media_dir": media_dir,
           "batch_size": cfg.push.batch_size, "on_batch": on_batch, "dataset_id": state.dataset_id}
    selected = select_rows(root, cfg)
    fresh = [r for r in selected if state.task_of(r, r["fingerprint"]) is None]
    rows = fresh[:cfg.push.limit] if cfg.push.limit else fresh
    have = ctx["staged"] = write_media(root, {r["sample_id"]: r for r in rows}, media_dir, cfg.push)
    summary = PushSummary(selected=len(selected), already_there=len(selected) - len(fresh),
                          no_media=sorted(r["sample_id"] for r in rows if r["sample_id"] not in have),
                          from_stored=sorted(sid for sid, (_, origin) in have.items()
                                             if origin == "stored" and cfg.push.review_media == "source"))
    for sid in summary.no_media:
        log.warning("%s: sample %s has no media to review (no embedded media, no usable source); not pushed",
                    root, sid)
    groups = group_by_project([r for r in rows if r["sample_id"] in have], cfg)
    try:
        for key, group in groups.items():
            pushed, found = push_group(client, state, group, key, ctx)
            summary.pushed, summary.already_there = summary.pushed + pushed, summary.already_there + found
        summary.projects = dict(state.server["projects"])
    except LabelStudioUnavailable as err:
        raise PushInterrupted(f"push of {root} interrupted: {err}. {len(state.tasks)} task(s) are recorded "
                              f"in {state.path}; rerun the push to resume") from None
    return summary


def main(cfg: PushConfig) -> int:
    try:
        summary = push_dataset(cfg)
    except (LabelStudioError, PushInterrupted, FileNotFoundError, ValueError) as err:
        print(f"instvl qa push: {err}", file=sys.stderr)
        return 1
    print(f"selected {summary.selected}  pushed {summary.pushed}  already there {summary.already_there}  "
          f"without media {len(summary.no_media)}")
    if summary.from_stored:
        print(f"  {len(summary.from_stored)} sample(s) reviewed on their stored media: source not usable "
              "(warnings above)")
    for title, project_id in summary.projects.items():
        print(f"  project {title!r}: id {project_id}  {cfg.server.url}/projects/{project_id}")
    return 0
