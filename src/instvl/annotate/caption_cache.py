"""A persistent captioning cache keyed by (model, prompt, inputs hash), so reruns do not re-caption.

Rerunning a build after a change that does not touch the captioner (a tracker threshold, a new input
folder) answers every caption already seen from an SQLite file instead of the VLM.
"""

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from instvl.annotate.caption.base import Captioner, WrappedCaptioner
from instvl.annotate.caption.request import CaptionRequest

log = logging.getLogger(__name__)


class CaptionCache:
    """SQLite key -> caption store, safe to share between threads and processes (WAL mode)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS captions (key TEXT PRIMARY KEY, caption TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=60)
        return db

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        db = self._connect()
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(db.execute(f"SELECT key, caption FROM captions WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, items: dict[str, str]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?)", list(items.items()))

    def __len__(self) -> int:
        return self._connect().execute("SELECT count(*) FROM captions").fetchone()[0]


class CachedCaptioner(WrappedCaptioner):
    """A `Captioner` that wraps another: cached requests (by `inner.key`) are answered from the cache, the
    rest in one batch. Requests and keys are the inner captioner's."""

    def __init__(self, inner: Captioner, cache: CaptionCache):
        super().__init__(inner)
        self.cache = cache
        self.hits = self.misses = 0

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]:
        keys = [self.inner.key(r) for r in requests]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            fresh = self.inner.caption([requests[i] for i in todo])
            new = {keys[i]: text for i, text in zip(todo, fresh, strict=True)}
            self.cache.put_many(new)
            found.update(new)
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return [found[k] for k in keys]
