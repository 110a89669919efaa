"""Running work units: every file of a unit through ingest and annotation into the unit's shard.

Every input has a fault boundary: any exception raised while fetching, probing, decoding or annotating
one file (unreadable media, a decompression bomb, a decoder crash, a model error on one clip) quarantines
that file with the exception type and message, the stage and the uri, and the unit goes on. Only faults
of the unit itself (models that do not load, a full disk, a lost output folder: `unit_fault`) fail it,
so that the flow retries or reports it; units run with it (`run_units`) go on.

Transient errors (timeouts, connection resets, HTTP 5xx from fsspec reads) are retried with backoff
before the file is quarantined; their quarantine reason then starts with `RETRYABLE`, and
`reopen_retryable_units` (`instvl build IN OUT --retry-quarantined true`) makes a rerun redo
exactly the units that hold such files. Models are built once per process
and per config (`engines_for`), so a worker that runs many units loads them once.

Each file is fetched once (remote bytes are spilled to one local file that all its clips decode from).
With `engine.mode: stream` (the default) the clips of the units flow through `annotate.engine`: many
clips in flight, decoding ahead in worker processes, batched model calls, rows written in input order,
the next unit's clips entering right behind the previous unit's; `serial` annotates one clip at a time.
Both write the same rows and quarantine the same inputs.
"""

import errno
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from instvl.annotate.caption.base import Captioner
from instvl.annotate.caption_cache import CachedCaptioner, CaptionCache
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.engine import ClipJob, DecodePool, StreamEngine
from instvl.annotate.memory import MemoryBudget, plan_memory
from instvl.annotate.pipeline import Engines, annotate_sample
from instvl.annotate.plan import Unit, require_plan
from instvl.annotate.progress import clear_progress, write_progress
from instvl.config import config_hash
from instvl.datasets import layout
from instvl.datasets.manifest import UnitStats, unit_done
from instvl.datasets.records import Sample
from instvl.datasets.writer import UnitWriter, safe_text
from instvl.media.clips import DecodedClip, clip_media, decode_clip
from instvl.media.fetch import Media, MediaError, fetch_media
from instvl.media.ingest import ClipSpec, Failure, plan_clips, probe_source

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = "retryable: "
"""Prefix of quarantine reasons a later retry may cure (the error was transient); others are permanent."""
_TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN, errno.ESTALE}

_ENGINES: dict[str, Engines] = {}
_ENGINES_LOCK = threading.Lock()


def engines_for(cfg: AnnotateConfig) -> Engines:
    """The models of `cfg`, built on first use in this process and then reused (thread-safe)."""
    cache_file = caption_cache_file(cfg)
    key = config_hash(cfg.annotation().model_copy(update={"input": None, "output": None})) + f":{cache_file}"
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            started = time.monotonic()
            budget = memory_budget(cfg)
            captioner_cfg = cfg.captioner
            if budget is not None and getattr(captioner_cfg, "kind", None) == "vllm":
                captioner_cfg = captioner_cfg.model_copy(
                    update={"gpu_memory_utilization": budget.vllm_fraction})
            # vLLM first: it checks at start-up that its share of the GPU is free
            captioner: Captioner = captioner_cfg.build()
            if cache_file is not None:
                captioner = CachedCaptioner(captioner, CaptionCache(cache_file))
            _ENGINES[key] = Engines.build(cfg, captioner=captioner)
            log.info("models loaded in %.1f s: %s", time.monotonic() - started, cfg.model_ids())
        return _ENGINES[key]


def memory_budget(cfg: AnnotateConfig) -> MemoryBudget | None:
    """The GPU memory plan of `cfg` (`engine.memory`), checked before any model loads: raises
    `engine.MemoryPlanError` with the numbers when the models cannot fit."""
    if cfg.engine.memory is None:
        return None
    in_process = getattr(cfg.captioner, "kind", None) == "vllm"
    budget = plan_memory(cfg.engine.memory, captioner_in_process=in_process)
    if budget is not None:
        log.info("GPU memory plan: %s", budget.describe())
        if getattr(cfg.captioner, "kind", None) == "openai":
            log.info("a node-local `vllm serve` for this preset: --gpu-memory-utilization %.3f",
                     budget.vllm_fraction)
    return budget


def install_engines(cfg: AnnotateConfig, engines: Engines) -> None:
    """Use `engines` for every unit of `cfg` in this process (benchmarks and tests inject backends)."""
    cache_file = caption_cache_file(cfg)
    key = config_hash(cfg.annotation().model_copy(update={"input": None, "output": None})) + f":{cache_file}"
    with _ENGINES_LOCK:
        _ENGINES[key] = engines


def caption_cache_file(cfg: AnnotateConfig) -> Path | None:
    """The caption cache of `cfg` (`out.cache_dir`, default OUTPUT/.cache), or None when it is off."""
    if not cfg.out.caption_cache or not (cfg.out.cache_dir or cfg.output):
        return None
    return Path(cfg.out.cache_dir or Path(str(cfg.output)) / layout.CACHE_DIR) / layout.CACHE_FILE


def run_unit(cfg: AnnotateConfig, unit_id: str) -> UnitStats:
    """Annotate and write one unit of the plan; returns its stats (skips a unit already done). A unit
    fault is raised as it was met."""
    try:
        return run_units(cfg, [unit_id])[0]
    except UnitsFailed as err:
        raise err.failures[unit_id] from None


class UnitsFailed(RuntimeError):
    """Units of a run that failed (the others were written): each unit's exception, in `failures`."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{unit}: {type(err).__name__}: {err}" for unit, err in failures.items()))

    def __reduce__(self) -> tuple[type, tuple[dict[str, BaseException]]]:
        return type(self), (self.failures,)


def run_units(cfg: AnnotateConfig, unit_ids: Sequence[str],
              finished: Callable[[UnitStats], None] | None = None) -> list[UnitStats]:
    """Annotate and write units of the plan one after another through one engine; their stats, in order
    (units already done are skipped).

    With `engine.mode: stream` a unit's clips enter the models right behind the previous unit's, so the
    models do not drain at a unit's end and wait at the next one's start (a unit's entity captions, its
    detections and its first tracks overlap the previous unit's last tracks and instance captions). Each
    unit is still written (and resumed) on its own. A unit that fails (a unit fault, see `unit_fault`)
    leaves nothing behind and the other units go on; `UnitsFailed` then names each failed unit.
    `finished(stats)` is called as each unit is written (a progress bar)."""
    cfg = cfg.annotation()  # what the rows and their config hash are made of, whatever section a caller adds
    if cfg.output is None:
        raise ValueError("run_units needs cfg.output, the dataset root")
    root = Path(cfg.output)
    pending = [unit_id for unit_id in unit_ids if not unit_done(root, unit_id)]
    if pending:
        plan = require_plan(root)
        failures = _run_lane(cfg, root, [plan.unit(unit_id) for unit_id in pending], finished)
        if failures:
            raise UnitsFailed(failures)
    return [UnitStats.read(layout.stats_path(root, unit_id)) for unit_id in unit_ids]


@dataclass(frozen=True)
class _UnitStart:
    unit: Unit


@dataclass(frozen=True)
class _UnitEnd:
    unit_id: str
    error: Exception | None = None  # listing, fetching or probing the unit's files failed for the unit


@dataclass(frozen=True)
class _Fault:
    """A clip met a unit fault: raised where the unit's rows are written, so only that unit fails."""

    error: Exception


class _OpenUnit:
    """The unit whose rows are being written: its writer, progress and fate."""

    def __init__(self, root: Path, cfg: AnnotateConfig, unit: Unit) -> None:
        self.root, self.unit, self.failed = root, unit, False
        self._stack = ExitStack()
        log.info("%s: annotating %d files", unit.unit_id, len(unit.sources))
        try:
            self.writer = self._stack.enter_context(UnitWriter(
                root, unit.unit_id, config=cfg, target_shard_bytes=cfg.out.target_shard_bytes,
                row_group_rows=cfg.out.row_group_rows, sources=len(unit.sources)))
        except Exception as err:
            self.abort(err)
            raise

    def take(self, event: object) -> None:
        """Write a row or a quarantine, record progress, or finish the unit (raises what failed it)."""
        if isinstance(event, _UnitEnd | _Fault) and event.error is not None:
            raise event.error
        if isinstance(event, _UnitEnd):
            self._stack.close()  # the writer finishes: shards renamed, stats written last
            clear_progress(self.root, self.unit.unit_id)
        elif isinstance(event, _SourceDone):
            write_progress(self.root, self.unit.unit_id, event.done, len(self.unit.sources),
                           self.writer.num_written)
        elif isinstance(event, Quarantine):
            self.writer.quarantine(event.uri, event.reason, event.stage, event.sample_id)
        elif isinstance(event, Sample):
            self.writer.write(event)
        else:
            raise TypeError(f"{self.unit.unit_id}: unexpected event {event!r}")

    def abort(self, err: BaseException) -> None:
        """The writer leaves nothing (its temporary files removed, the unit not done)."""
        self.failed = True
        try:
            self._stack.__exit__(type(err), err, err.__traceback__)
        finally:
            clear_progress(self.root, self.unit.unit_id)


def _run_lane(cfg: AnnotateConfig, root: Path, units: list[Unit],
              finished: Callable[[UnitStats], None] | None = None) -> dict[str, BaseException]:
    """Run `units` in order through one engine; the exception of each unit that failed."""
    failures: dict[str, BaseException] = {}
    current: _OpenUnit | None = None
    # the decode processes start while the models load
    decoders = DecodePool(cfg.engine.decode_workers) if cfg.engine.mode == "stream" else None
    try:
        engines = engines_for(cfg)
        with tempfile.TemporaryDirectory(prefix="instvl-units-") as scratch:
            for event in _results(_lane_jobs(units, cfg, Path(scratch)), engines, cfg, decoders):
                if isinstance(event, _SourceDone) and event.spilled is not None:
                    event.spilled.unlink(missing_ok=True)
                if isinstance(event, _UnitStart):
                    try:
                        current = _OpenUnit(root, cfg, event.unit)
                    except Exception as err:
                        failures[event.unit.unit_id] = err
                        log.error("%s failed: %s: %s", event.unit.unit_id, type(err).__name__, err)
                    continue
                if current is None:  # the rest of a unit whose writer did not open
                    continue
                if not current.failed:
                    try:
                        current.take(event)
                    except Exception as err:  # this unit fails; the others go on
                        failures[current.unit.unit_id] = err
                        log.error("%s failed: %s: %s", current.unit.unit_id, type(err).__name__, err)
                        current.abort(err)
                if isinstance(event, _UnitEnd):
                    if not current.failed and finished is not None and current.writer.stats is not None:
                        finished(current.writer.stats)
                    current = None
    except BaseException as err:
        if current is not None and not current.failed:
            current.abort(err)
        raise
    finally:
        if decoders is not None:
            decoders.close()
    return failures


def _lane_jobs(units: list[Unit], cfg: AnnotateConfig,
               scratch: Path) -> Iterator["ClipJob | Quarantine | _SourceDone | _UnitStart | _UnitEnd"]:
    """The clips of `units` in order (numbered across units: the engine serves the oldest first), each
    unit's between its start and end markers; a unit whose files cannot be listed or probed for a unit
    fault ends with that error, and the next unit follows."""
    seq = 0
    for unit in units:
        yield _UnitStart(unit)
        folder = scratch / unit.unit_id
        folder.mkdir()
        error = None
        try:
            for event in _clip_jobs(unit, cfg, folder, seq):
                seq += isinstance(event, ClipJob)
                yield event
        except Exception as err:
            error = err
        yield _UnitEnd(unit.unit_id, error)


# Errors that say the unit's machine or output is broken, not the input: quarantining every file of the
# unit for them would turn a full disk into a dataset of quarantined inputs.
_UNIT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def unit_fault(err: BaseException) -> bool:
    """True when `err` is a fault of the unit (fail and retry it), not of the one input being read."""
    return not isinstance(err, Exception) or isinstance(err, MemoryError) or (
        isinstance(err, OSError) and err.errno in _UNIT_ERRNOS)


def transient(err: BaseException) -> bool:
    """True for errors a retry may cure: timeouts, resets and refusals, HTTP 429 and 5xx (fsspec, aiohttp)."""
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS:
        return True
    status = getattr(err, "status", None) or getattr(err, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return True
    module = type(err).__module__.split(".", 1)[0]
    return module in ("aiohttp", "requests", "urllib3", "httpx") and "Timeout" in type(err).__name__


def with_retries(call: Callable[[], T], attempts: int = 3, delay_s: float = 0.5) -> T:
    """`call()`, repeated with exponential backoff while it raises a transient error."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:
            if attempt == attempts or not transient(err):
                raise
            log.warning("transient error (attempt %d/%d), retrying in %.1f s: %s: %s", attempt, attempts,
                        delay_s * 2 ** (attempt - 1), type(err).__name__, err)
            time.sleep(delay_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def describe(err: BaseException) -> str:
    """A quarantine reason: the exception type and message, marked `RETRYABLE` when a retry may help."""
    reason = err.reason if isinstance(err, MediaError) else f"{type(err).__name__}: {err}"
    return RETRYABLE + reason if transient(err) else reason


def reopen_retryable_units(root: Path) -> list[str]:
    """Mark every finished unit that quarantined a file with a `RETRYABLE` reason as not done (its stats
    file is removed; the writer replaces its shards), so the next run retries those files."""
    import pyarrow.parquet as pq

    from instvl.datasets.manifest import read_unit_stats

    reopened = []
    for stats in read_unit_stats(root):
        if not stats.quarantine_path:
            continue
        reasons = pq.read_table(root / stats.quarantine_path, columns=["reason"]).column(0).to_pylist()
        if any(reason.startswith(RETRYABLE) for reason in reasons):
            layout.stats_path(root, stats.unit_id).unlink()
            reopened.append(stats.unit_id)
    if reopened:
        log.info("retrying the quarantined files of %d units: %s", len(reopened), ", ".join(reopened))
    return reopened


@dataclass(frozen=True)
class Quarantine:
    """An input (or one clip of it) set aside, with the reason and the stage that failed."""

    uri: str
    reason: str
    stage: str
    sample_id: str | None = None


@dataclass(frozen=True)
class _SourceDone:
    done: int  # files of the unit finished so far
    spilled: Path | None  # the local copy of a remote file, removed once its clips are written


def _probe(uri: str, cfg: AnnotateConfig) -> tuple[Media, list[ClipSpec]]:
    media = fetch_media(uri)
    return media, plan_clips(probe_source(uri, cfg.ingest, media), cfg.ingest, media)


def _clip_jobs(unit: Unit, cfg: AnnotateConfig, scratch: Path,
               seq: int = 0) -> Iterator[ClipJob | Quarantine | _SourceDone]:
    """The unit's clips in order (numbered from `seq`), with the quarantined files and a marker after each
    file.

    Each file is fetched and probed once; a remote video is written once to `scratch`, and its clips
    decode from that local file (decord reads paths: bytes would be spilled again for every clip)."""
    ahead = max(1, 2 * cfg.engine.decode_workers) if cfg.engine.mode == "stream" else 1
    with ThreadPoolExecutor(ahead, thread_name_prefix="instvl-probe") as pool:
        probes = _ordered(pool, ahead, [uri for uri in unit.sources if uri not in unit.duplicates],
                          lambda uri: with_retries(lambda: _probe(uri, cfg)))
        for done, uri in enumerate(unit.sources, 1):
            if uri in unit.duplicates:
                yield Quarantine(uri, f"duplicate: same bytes as {unit.duplicates[uri]}", "dedupe")
                yield _SourceDone(done, None)
                continue
            for event in _source_jobs(uri, next(probes), seq, done, scratch):
                seq += isinstance(event, ClipJob)
                yield event


def _ordered(pool: ThreadPoolExecutor, ahead: int, items: list[str],
             fn: Callable[[str], T]) -> Iterator["Future[T]"]:
    """fn(item) for each item, in order, computed at most `ahead` items in advance (files are fetched and
    probed ahead of the models without holding a whole unit's bytes)."""
    queued: deque[Future[T]] = deque()
    for item in items:
        queued.append(pool.submit(fn, item))
        if len(queued) > ahead:
            yield queued.popleft()
    yield from queued


def _source_jobs(uri: str, probed: "Future[tuple[Media, list[ClipSpec]]]", seq: int, done: int,
                 scratch: Path) -> Iterator[ClipJob | Quarantine | _SourceDone]:
    """The clips of one probed file (numbered from `seq`) then its marker, or its quarantine."""
    spilled = None
    try:
        media, specs = probed.result()
    except Exception as err:  # the fault boundary of one input: see the module docstring
        if unit_fault(err):
            raise
        yield Quarantine(uri, describe(err), err.stage if isinstance(err, MediaError) else "probe")
        yield _SourceDone(done, None)
        return
    if isinstance(media, bytes) and any(spec.media_type == "video" for spec in specs):
        spilled = scratch / f"{done:05d}{os.path.splitext(uri)[1][:16] or '.mp4'}"
        spilled.write_bytes(media)
        media = str(spilled)
    for offset, spec in enumerate(specs):
        yield ClipJob(seq + offset, uri, spec, media)
    yield _SourceDone(done, spilled)


_Decoded = tuple[DecodedClip | Failure, tuple[bytes, str] | Exception | None]


def _decode(job: ClipJob, cfg: AnnotateConfig) -> _Decoded:
    """The clip's sampled frames and the media to embed in its row (an embedding error is kept, to be
    raised where the serial path met it)."""
    decoded = decode_clip(job.spec, cfg.ingest, job.media, track_fps=cfg.trajectories.track_fps)
    if isinstance(decoded, Failure) or not cfg.out.embed_media:
        return decoded, None
    try:
        return decoded, clip_media(job.spec, cfg.ingest, job.media, video=cfg.out.video)
    except Exception as err:
        return decoded, err


def _annotate_clip(job: ClipJob, decoded: Callable[[], _Decoded], engines: Callable[[DecodedClip], Engines],
                   cfg: AnnotateConfig) -> Sample | Quarantine:
    """One clip's row, or why it is quarantined: the fault boundary of one clip."""
    stage = "decode"
    spec = job.spec
    try:
        clip, embedded = decoded()
        if isinstance(clip, Failure):
            return Quarantine(job.uri, clip.reason, clip.stage, spec.sample_id)
        stage = "annotate"
        if isinstance(embedded, Exception):
            raise embedded
        sample = annotate_sample(clip, engines(clip), cfg, embedded)
    except Exception as err:  # a decoder or a model failing on one clip must not lose the unit
        if unit_fault(err):
            raise
        if not isinstance(err, MediaError):
            log.exception("%s failed on %s [%d, %d)", stage, safe_text(job.uri), spec.start_frame,
                          spec.end_frame)
        return Quarantine(job.uri, describe(err), err.stage if isinstance(err, MediaError) else stage,
                          spec.sample_id)
    if len(sample.instances) < cfg.filter.min_instances:
        return Quarantine(job.uri, f"too few instances ({len(sample.instances)} < "
                          f"{cfg.filter.min_instances})", "filter", spec.sample_id)
    return sample


_Event = TypeVar("_Event")


def _annotated(job: ClipJob, decoded: Callable[[], _Decoded], engines: Callable[[DecodedClip], Engines],
               cfg: AnnotateConfig) -> "Sample | Quarantine | _Fault":
    """`_annotate_clip`, with a unit fault handed on as a value: the stream goes on with the next unit."""
    try:
        return _annotate_clip(job, decoded, engines, cfg)
    except Exception as err:
        return _Fault(err)


def _results(jobs: Iterator[_Event], engines: Engines, cfg: AnnotateConfig,
             decoders: DecodePool | None = None) -> Iterator["_Event | Sample | Quarantine | _Fault"]:
    """Each clip job's row (or quarantine, or unit fault) and every other event, in input order, from the
    serial path or the stream engine."""
    if cfg.engine.mode == "serial":
        for job in jobs:
            if isinstance(job, ClipJob):
                yield _annotated(job, partial(_decode, job, cfg), lambda _: engines, cfg)
            else:
                yield job
        return
    started = time.perf_counter()
    with StreamEngine(engines, cfg, decoders) as stream:
        def annotate(job: ClipJob, decoded: Future[_Decoded]) -> "Sample | Quarantine | _Fault":
            return _annotated(job, decoded.result, lambda clip: stream.clip_engines(clip.frames), cfg)

        for event, result in stream.run(jobs, lambda job: _decode(job, cfg), annotate):
            yield result if result is not None else event
        wall = time.perf_counter() - started
        log.info("stream engine: %s", "; ".join(
            f"{name} busy {s['busy_of_wall']:.0%} mean batch {s['mean_batch']:.1f}"
            for name, s in ((n, st.summary(wall)) for n, st in stream.stages().items())))
