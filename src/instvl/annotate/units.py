"""Running one work unit: every file of the unit through ingest and annotation into one shard.

Per-sample failures (unreadable media, a decoder crash, a model error on one clip) are quarantined
with their reason and the unit goes on; only faults of the unit itself (models that do not load, a
disk that is full) fail it, so that the flow retries or reports it. Models are built once per process
and per config (`engines_for`), so a worker that runs many units loads them once.
"""

import logging
import threading
import time
from pathlib import Path

from instvl.annotate.caption_cache import CachedCaptioner, CaptionCache
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.pipeline import Engines, annotate_sample
from instvl.annotate.plan import Unit, require_plan
from instvl.annotate.progress import clear_progress, write_progress
from instvl.config import config_hash
from instvl.datasets import layout
from instvl.datasets.manifest import UnitStats, unit_done
from instvl.datasets.writer import UnitWriter
from instvl.media.clips import clip_media, decode_clip
from instvl.media.fetch import MediaError, fetch_media
from instvl.media.ingest import Failure, plan_clips, probe_source

log = logging.getLogger(__name__)

_ENGINES: dict[str, Engines] = {}
_ENGINES_LOCK = threading.Lock()


def engines_for(cfg: AnnotateConfig) -> Engines:
    """The models of `cfg`, built on first use in this process and then reused (thread-safe)."""
    cache_file = caption_cache_file(cfg)
    key = config_hash(cfg.annotation().model_copy(update={"input": None, "output": None})) + f":{cache_file}"
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            started = time.monotonic()
            captioner = cfg.captioner.build()
            if cache_file is not None:
                captioner = CachedCaptioner(captioner, CaptionCache(cache_file))
            _ENGINES[key] = Engines.build(cfg, captioner=captioner)
            log.info("models loaded in %.1f s: %s", time.monotonic() - started, cfg.model_ids())
        return _ENGINES[key]


def caption_cache_file(cfg: AnnotateConfig) -> Path | None:
    """The caption cache of `cfg` (`out.cache_dir`, default OUTPUT/.cache), or None when it is off."""
    if not cfg.out.caption_cache or not (cfg.out.cache_dir or cfg.output):
        return None
    return Path(cfg.out.cache_dir or Path(cfg.output) / layout.CACHE_DIR) / layout.CACHE_FILE


def run_unit(cfg: AnnotateConfig, unit_id: str) -> UnitStats:
    """Annotate and write one unit of the plan; returns its stats (skips a unit already done)."""
    cfg = cfg.annotation()  # what the rows and their config hash are made of, whatever section a caller adds
    root = Path(cfg.output)
    if unit_done(root, unit_id):
        return UnitStats.read(layout.stats_path(root, unit_id))
    unit = require_plan(root).unit(unit_id)
    log.info("%s: annotating %d files", unit_id, len(unit.sources))
    engines = engines_for(cfg)
    try:
        with UnitWriter(root, unit_id, config=cfg, target_shard_bytes=cfg.out.target_shard_bytes,
                        row_group_rows=cfg.out.row_group_rows, sources=len(unit.sources)) as writer:
            for done, uri in enumerate(unit.sources, 1):
                _annotate_source(uri, unit, engines, cfg, writer)
                write_progress(root, unit_id, done, len(unit.sources), writer.num_written)
    finally:
        clear_progress(root, unit_id)
    assert writer.stats is not None  # set when the with block ends without an exception
    return writer.stats


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
        decoded = decode_clip(spec, cfg.ingest, media)
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
