"""Running one work unit: every file of the unit through ingest and annotation into one shard.

Every input has a fault boundary: any exception raised while fetching, probing, decoding or annotating
one file (unreadable media, a decompression bomb, a decoder crash, a model error on one clip) quarantines
that file with the exception type and message, the stage and the uri, and the unit goes on. Only faults
of the unit itself (models that do not load, a full disk, a lost output folder: `unit_fault`) fail it,
so that the flow retries or reports it. Models are built once per process
and per config (`engines_for`), so a worker that runs many units loads them once.
"""

import errno
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
from instvl.datasets.writer import UnitWriter, safe_text
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


# Errors that say the unit's machine or output is broken, not the input: quarantining every file of the
# unit for them would turn a full disk into a dataset of quarantined inputs.
_UNIT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def unit_fault(err: BaseException) -> bool:
    """True when `err` is a fault of the unit (fail and retry it), not of the one input being read."""
    return not isinstance(err, Exception) or isinstance(err, MemoryError) or (
        isinstance(err, OSError) and err.errno in _UNIT_ERRNOS)


def describe(err: BaseException) -> str:
    """A quarantine reason: the exception type and message, whatever raised it."""
    if isinstance(err, MediaError):
        return err.reason
    return f"{type(err).__name__}: {err}"


def _annotate_source(uri: str, unit: Unit, engines: Engines, cfg: AnnotateConfig, writer: UnitWriter) -> None:
    if uri in unit.duplicates:
        writer.quarantine(uri, f"duplicate: same bytes as {unit.duplicates[uri]}", "dedupe")
        return
    try:
        media = fetch_media(uri)
        specs = plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)
    except Exception as err:  # the fault boundary of one input: see the module docstring
        if unit_fault(err):
            raise
        stage = err.stage if isinstance(err, MediaError) else "probe"
        writer.quarantine(uri, describe(err), stage)
        return
    for spec in specs:
        stage = "decode"
        try:
            decoded = decode_clip(spec, cfg.ingest, media)
            if isinstance(decoded, Failure):
                writer.quarantine(uri, decoded.reason, decoded.stage, spec.sample_id)
                continue
            stage = "annotate"
            embedded = clip_media(spec, cfg.ingest, media) if cfg.out.embed_media else None
            sample = annotate_sample(decoded, engines, cfg, embedded)
        except Exception as err:  # a decoder or a model failing on one clip must not lose the unit
            if unit_fault(err):
                raise
            if not isinstance(err, MediaError):
                log.exception("%s failed on %s [%d, %d)", stage, safe_text(uri), spec.start_frame,
                              spec.end_frame)
            writer.quarantine(uri, describe(err), err.stage if isinstance(err, MediaError) else stage,
                              spec.sample_id)
            continue
        if len(sample.instances) < cfg.filter.min_instances:
            writer.quarantine(uri, f"too few instances ({len(sample.instances)} < "
                              f"{cfg.filter.min_instances})", "filter", spec.sample_id)
            continue
        writer.write(sample)
