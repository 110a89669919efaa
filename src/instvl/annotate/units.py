"""Running one work unit: every file of the unit through ingest and annotation into one shard.

Per-sample failures (unreadable media, a decoder crash, a model error on one clip) are quarantined
with their reason and the unit goes on; only faults of the unit itself (models that do not load, a
disk that is full) fail it, so that the flow retries or reports it. Models are built once per process
and per config (`engines_for`), so a worker that runs many units loads them once.
"""

import json
import logging
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from instvl.annotate.caption_cache import CachedCaptioner, CaptionCache
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.pipeline import Engines, annotate_sample
from instvl.annotate.plan import Unit, load_plan
from instvl.config import config_hash
from instvl.datasets import layout
from instvl.datasets.clips import clip_media, decode_clip
from instvl.datasets.ingest import Failure, plan_clips, probe_source
from instvl.datasets.manifest import unit_done
from instvl.datasets.probe import MediaError, fetch_media
from instvl.datasets.shards import UnitWriter

log = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"
CACHE_FILE = "captions.sqlite"

_ENGINES: dict[str, Engines] = {}
_ENGINES_LOCK = threading.Lock()


def engines_for(cfg: AnnotateConfig) -> Engines:
    """The models of `cfg`, built on first use in this process and then reused (thread-safe)."""
    cache_file = caption_cache_file(cfg)
    key = config_hash(cfg.model_copy(update={"input": None, "output": None})) + f":{cache_file}"
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            started = time.monotonic()
            captioner = cfg.captioner.build()
            if cache_file is not None:
                captioner = CachedCaptioner(captioner, CaptionCache(cache_file), captioner.key)
            _ENGINES[key] = Engines.build(cfg, captioner=captioner)
            log.info("models loaded in %.1f s: %s", time.monotonic() - started, cfg.model_ids())
        return _ENGINES[key]


def caption_cache_file(cfg: AnnotateConfig) -> Path | None:
    """The caption cache of `cfg` (`out.cache_dir`, default OUTPUT/.cache), or None when it is off."""
    if not cfg.out.caption_cache or not (cfg.out.cache_dir or cfg.output):
        return None
    return Path(cfg.out.cache_dir or Path(cfg.output) / ".cache") / CACHE_FILE


def run_unit(cfg: AnnotateConfig, unit_id: str) -> dict[str, Any]:
    """Annotate and write one unit of the plan; returns its stats (skips a unit already done)."""
    root = Path(cfg.output)
    if unit_done(root, unit_id):
        return json.loads(layout.stats_path(root, unit_id).read_text())
    plan = load_plan(root)
    if plan is None:
        raise FileNotFoundError(f"{root / 'plan.json'}: no build plan (run make_plan first)")
    unit = plan.unit(unit_id)
    log.info("%s: annotating %d files", unit_id, len(unit.sources))
    engines = engines_for(cfg)
    try:
        with UnitWriter(root, unit_id, config=cfg, target_shard_bytes=cfg.out.target_shard_bytes,
                        row_group_rows=cfg.out.row_group_rows,
                        extra_stats={"sources": len(unit.sources)}) as writer:
            for done, uri in enumerate(unit.sources, 1):
                _annotate_source(uri, unit, engines, cfg, writer)
                _report_progress(root, unit_id, done, len(unit.sources), writer.num_written)
    finally:  # a failed attempt must not leave files counted as done in the progress bar
        (root / PROGRESS_DIR / f"{unit_id}.json").unlink(missing_ok=True)
    return writer.stats or {}


def _annotate_source(uri: str, unit: Unit, engines: Engines, cfg: AnnotateConfig, writer: UnitWriter) -> None:
    if uri in unit.duplicates:
        writer.quarantine(uri, f"duplicate: same bytes as {unit.duplicates[uri]}", "dedupe")
        return
    try:
        media = fetch_media(uri)
        specs = plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)
    except MediaError as err:
        writer.quarantine(err.uri, err.reason, err.stage)
        return
    except OSError as err:
        writer.quarantine(uri, f"unreadable: {err}", "probe")
        return
    for spec in specs:
        decoded = decode_clip(spec, cfg.ingest)
        if isinstance(decoded, Failure):
            writer.quarantine(decoded.uri, decoded.reason, decoded.stage, spec.sample_id)
            continue
        try:
            embedded = clip_media(spec, cfg.ingest, media) if cfg.out.embed_media else None
            sample = annotate_sample(decoded, engines, cfg, embedded)
        except MediaError as err:
            writer.quarantine(uri, err.reason, err.stage, spec.sample_id)
            continue
        except Exception as err:  # a model failing on one clip must not lose the rest of the unit
            log.exception("annotation failed on %s [%d, %d)", uri, spec.start_frame, spec.end_frame)
            writer.quarantine(uri, f"{type(err).__name__}: {err}", "annotate", spec.sample_id)
            continue
        if len(sample.instances) < cfg.filter.min_instances:
            writer.quarantine(uri, f"too few instances ({len(sample.instances)} < "
                              f"{cfg.filter.min_instances})", "filter", spec.sample_id)
            continue
        writer.write(sample)


def _report_progress(root: Path, unit_id: str, done: int, total: int, samples: int) -> None:
    """A small per-unit progress file that the CLI's progress bar reads (works across processes)."""
    payload = json.dumps({"sources_done": done, "sources": total, "samples": samples}).encode()
    layout.atomic_write_bytes(root / PROGRESS_DIR / f"{unit_id}.json", payload)


def read_progress(root: str | Path, finished: Collection[str] = ()) -> tuple[int, int]:
    """(sources done, samples written) of units in progress, leaving out the `finished` unit ids (their
    stats count them; a progress file lives on for a moment after its unit's stats file appears)."""
    done = samples = 0
    for path in (Path(root) / PROGRESS_DIR).glob("*.json"):
        if path.stem in finished or path.name.startswith(layout.TMP_PREFIX):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        done, samples = done + data["sources_done"], samples + data["samples"]
    return done, samples
