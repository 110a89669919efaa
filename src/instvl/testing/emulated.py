"""Emulated GPU backends: real answers from cheap inner backends, GPU-like time from a cost model.

A benchmark of the unit engine must show whether the models are kept busy with full batches, which does
not need a GPU: each emulated backend wraps an inner backend (fake, pixels: its answers make real rows)
and then holds its emulated device for the time a GPU would take (`time.sleep`, scaled by `time_scale`).

- `EmulatedDetector`: one device stream; a call of n frames costs `launch_s + per_item_s * n` per chunk
  of at most `batch_size` frames (a GPU saturates there). `detect_many` takes one phrase list per frame
  (GroundingDINO's text branch is per image, so mixed prompts share a batch).
- `EmulatedTracker`: one device stream; a window costs `launch_s + per_frame_s * T + per_object_s * T * N`.
- `ContinuousBatching`: a vLLM-like scheduler (`max_num_seqs` sequences decode together; a step costs
  `step_s + per_seq_s * running`, plus `prefill_per_image_s` for each image of the sequences admitted
  in it, less the images of a prefix already prefilled (prefix caching); a sequence leaves after its
  output tokens). `EmulatedCaptioner` feeds it in process (like the `vllm` captioner, in calls or with
  `concurrency`, or `AsyncLLM`); `serve_openai` puts it behind a local OpenAI-compatible HTTP server so
  the real `openai` captioner backend can be measured with requests in flight.

Every device records `batching.StageStats`: busy time, calls, items per call, items in flight. Devices
given one `SharedGpu` take turns on it (the `annotate/gpu` preset: every model on one GPU): a call or a
step holds the GPU for its modelled time, and the GPU records its own busy time.
"""

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from instvl.annotate.batching import LoopThread, StageStats
from instvl.annotate.caption.base import BatchCaptioner, Captioner, WrappedCaptioner
from instvl.annotate.caption.request import CaptionRequest
from instvl.annotate.caption.visual_prompt import marked_indices, shared_indices, subsample_indices
from instvl.annotate.detect.base import Detector
from instvl.annotate.track.base import Tracker
from instvl.annotate.tracks import Detection, TrackedFrame, TrackedObject, TrackSeed
from instvl.geometry import as_box


@dataclass
class GpuCost:
    """Seconds of one call: a fixed launch cost plus a per-item cost, saturating at `batch_size` items."""

    launch_s: float
    per_item_s: float
    batch_size: int = 8

    def seconds(self, items: int) -> float:
        full, rest = divmod(items, self.batch_size)
        chunks = [self.batch_size] * full + ([rest] if rest else [])
        return sum(self.launch_s + self.per_item_s * n for n in chunks)


class SharedGpu:
    """One GPU that several emulated models take turns on: a call waits until the GPU is free (no queue
    order nor priority among the waiting models: whichever takes the lock first)."""

    def __init__(self) -> None:
        self.stats = StageStats("gpu")
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, items: int) -> Iterator[None]:
        with self._lock:
            self.stats.begin(items)
            try:
                yield
            finally:
                self.stats.end(items)


class EmulatedDevice:
    """One GPU stream: calls run one at a time for their modelled time, recorded in `stats` (on `gpu`,
    when given, taking turns with the other models on it)."""

    def __init__(self, name: str, time_scale: float = 1.0, gpu: SharedGpu | None = None) -> None:
        self.name, self.time_scale, self.gpu = name, time_scale, gpu
        self.stats = StageStats(name)
        self.trace: list[tuple[float, int, float]] = []  # per call: start, items, modelled seconds
        self._lock = threading.Lock()

    def run(self, seconds: float, items: int) -> None:
        with self._lock, self.gpu.hold(items) if self.gpu else nullcontext():
            self.trace.append((time.perf_counter(), items, seconds))
            self.stats.begin(items)
            try:
                time.sleep(seconds * self.time_scale)
            finally:
                self.stats.end(items)

    def reset(self) -> None:
        self.stats = StageStats(self.name)
        self.trace = []


class EmulatedDetector:
    """A detector with GPU-like cost; answers from `inner`, one frame at a time (batch-independent)."""

    def __init__(self, inner: Detector, cost: GpuCost, device: EmulatedDevice) -> None:
        self.inner, self.cost, self.device = inner, cost, device
        self.batch_size = cost.batch_size

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]:
        return self.detect_many(frames, [phrases] * len(frames))

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One phrase list per frame, in one batch."""
        found = [self.inner.detect([frame], list(phrases))[0] for frame, phrases in zip(frames, phrase_lists,
                                                                                        strict=True)]
        self.device.run(self.cost.seconds(len(frames)), len(frames))
        return found


@dataclass
class TrackCost:
    """Seconds of one tracker window of T frames and N objects."""

    launch_s: float = 0.03
    per_frame_s: float = 0.015
    per_object_s: float = 0.008

    def seconds(self, frames: int, objects: int) -> float:
        return self.launch_s + self.per_frame_s * frames + self.per_object_s * frames * max(1, objects)


class StillTracker:
    """A tracker that costs nothing: every object keeps its seed box, drifting `drift` per frame (so the
    builder's association sees motion). An inner backend for `EmulatedTracker` when the CPU must stay
    free for the pipeline being measured (template matching costs 0.3 s of CPU per window)."""

    def __init__(self, drift: float = 0.002) -> None:
        self.drift = drift

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        out = []
        for k in range(len(frames)):
            objects = {}
            for seed in seeds:
                box = np.clip(np.asarray(seed.box_xyxy, float) + self.drift * k, 0.0, 1.0)
                objects[seed.obj_id] = TrackedObject(seed.obj_id, as_box(box), 0.9)
            out.append(TrackedFrame(k, objects))
        return out


class EmulatedTracker:
    """A tracker with GPU-like cost; answers from `inner`."""

    def __init__(self, inner: Tracker, cost: TrackCost, device: EmulatedDevice) -> None:
        self.inner, self.cost, self.device = inner, cost, device

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        out = self.inner.track(frames, seeds)
        self.device.run(self.cost.seconds(len(frames), len(seeds)), len(frames))
        return out


@dataclass
class _Sequence:
    images: int
    tokens: int
    prefix: tuple[int, int] | None = None  # (key, images) of a prefix other sequences may share
    done: threading.Event = field(default_factory=threading.Event)


class ContinuousBatching(LoopThread):
    """A vLLM-like continuous-batching engine on one emulated GPU (see the module docstring).

    One emulated step decodes `tokens_per_step` tokens of every running sequence (multi-step
    scheduling keeps the emulation's own overhead small)."""

    def __init__(self, max_num_seqs: int = 64, step_s: float = 0.015, per_seq_s: float = 0.0005,
                 prefill_per_image_s: float = 0.02, tokens_per_step: int = 8,
                 time_scale: float = 1.0, prefix_cache: int = 256, gather_s: float = 0.002,
                 gpu: SharedGpu | None = None) -> None:
        super().__init__("instvl-emulated-vlm")
        self.max_num_seqs, self.step_s, self.per_seq_s, self.gpu = max_num_seqs, step_s, per_seq_s, gpu
        self.prefix_cache, self.gather_s = prefix_cache, gather_s
        self._prefixes: OrderedDict[int, None] = OrderedDict()
        self.prefill_per_image_s, self.tokens_per_step = prefill_per_image_s, tokens_per_step
        self.time_scale = time_scale
        self.stats = StageStats("caption")
        self.steps = 0
        self.seq_steps = 0  # sum over steps of the running sequences
        self.waiting_steps = 0  # sum over steps of waiting + running sequences
        self.trace: list[tuple[float, int, int, float]] = []  # per step: start, running, admitted, seconds
        self._waiting: list[_Sequence] = []
        self._running: list[tuple[_Sequence, int]] = []
        self._start()

    def generate(self, sequences: Sequence[tuple[int, int]],
                 prefixes: Sequence[tuple[int, int] | None] | None = None) -> None:
        """Run sequences of (images, output tokens) to completion (blocks; call from many threads).
        `prefixes[i]`: (key, images) of the images sequence i opens with; a prefix cache (vLLM's, on by
        default) encodes them once: a sequence whose prefix was prefilled before pays only the rest."""
        prefixes = prefixes or [None] * len(sequences)
        seqs = [_Sequence(images, max(1, tokens), prefix)
                for (images, tokens), prefix in zip(sequences, prefixes, strict=True)]
        with self._cond:
            self._waiting += seqs
            self._cond.notify_all()
        for seq in seqs:
            seq.done.wait()

    def _prefill_images(self, seq: _Sequence) -> int:
        """Images to encode for `seq`: all, less its prefix when the cache holds it (LRU of
        `prefix_cache` prefixes, a stand-in for the KV blocks vLLM keeps)."""
        if seq.prefix is None:
            return seq.images
        key, shared = seq.prefix
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return seq.images - shared
        self._prefixes[key] = None
        if len(self._prefixes) > self.prefix_cache:
            self._prefixes.popitem(last=False)
        return seq.images

    def load(self) -> int:
        """A data-parallel server's routing score of this engine: waiting sequences count four times, as
        vLLM's load balancer counts them (a waiting request holds no batch slot yet but queues first)."""
        with self._cond:
            return 4 * len(self._waiting) + len(self._running)

    def mean_batch(self) -> float:
        return self.seq_steps / self.steps if self.steps else 0.0

    def mean_in_flight(self) -> float:
        return self.waiting_steps / self.steps if self.steps else 0.0

    def reset(self) -> None:
        self.stats = StageStats("caption")
        self.steps = self.seq_steps = self.waiting_steps = 0
        self._prefixes.clear()
        self.trace = []

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    return
                if not self._running and self.gather_s:
                    # Idle: the requests sent together with this one join its step (vLLM's engine core
                    # takes its whole input queue before a step; an emulated step is 8 tokens long).
                    deadline = time.monotonic() + self.gather_s
                    while (gather := deadline - time.monotonic()) > 0:
                        self._cond.wait(gather)
                admitted = []
                while self._waiting and len(self._running) < self.max_num_seqs:
                    seq = self._waiting.pop(0)
                    self._running.append((seq, seq.tokens))
                    admitted.append(seq)
                running = len(self._running)
                self.waiting_steps += running + len(self._waiting)
            seconds = self.tokens_per_step * (self.step_s + self.per_seq_s * running) + \
                self.prefill_per_image_s * sum(self._prefill_images(seq) for seq in admitted)
            with self.gpu.hold(running) if self.gpu else nullcontext():
                self.trace.append((time.perf_counter(), running, len(admitted), seconds))
                self.stats.begin(running)
                time.sleep(seconds * self.time_scale)
                self.stats.end(running)
            self.steps += 1
            self.seq_steps += running
            with self._cond:
                left = []
                for seq, tokens in self._running:
                    tokens -= self.tokens_per_step
                    if tokens <= 0:
                        seq.done.set()
                    else:
                        left.append((seq, tokens))
                self._running = left


OUTPUT_TOKENS: dict[str, int] = {"entities": 120, "global": 150, "instance": 90}
"""Typical answer lengths in tokens per request kind (varied +-25 % by a hash of the answer)."""


def output_tokens(kind: str, text: str) -> int:
    spread = (zlib.crc32(text.encode()) % 1000) / 1000
    return round(OUTPUT_TOKENS.get(kind, 100) * (0.75 + 0.5 * spread))


def request_images(request: CaptionRequest) -> int:
    """The images the VLM encodes for `request`, counted as `visual_prompt.render_request` makes them
    (without drawing): a video input counts half its frames (Qwen2-VL's temporal patch of 2 frames), a
    'prefix' request its shared clean frames plus its marked ones."""
    cfg, target = request.visual, request.instance
    if request.as_video:
        return max(1, -(-len(subsample_indices(len(request.frames), cfg.max_video_frames)) // 2))
    if cfg.mode == "prefix":
        marked = len(marked_indices(target, cfg.marked_frames)) if target is not None else 0
        return len(shared_indices(request)) + marked
    shown = len(request.frames) if target is None else sum(b is not None for b in target.boxes)
    return max(1, min(shown, cfg.max_images))


def request_prefix(request: CaptionRequest) -> tuple[int, int] | None:
    """In 'prefix' mode, (a key of the clip's shared clean frames, how many): every request of a clip opens
    with them, so a prefix cache encodes them once. None in the other modes (no shared images)."""
    if request.visual.mode != "prefix" or request.as_video:
        return None
    shared = shared_indices(request)
    key = 0
    for t in shared:
        frame = np.ascontiguousarray(request.frames[t])
        key = zlib.crc32(frame.tobytes(), zlib.crc32(str(frame.shape).encode(), key))
    return key, len(shared)


class EmulatedCaptioner(WrappedCaptioner):
    """A captioner with vLLM-like cost: answers from `inner`, time from a shared `ContinuousBatching`.

    Concurrent `caption` calls share the engine (like the `vllm` captioner with `concurrency`, `AsyncLLM`
    or a server); one call's requests join
    the running batch together."""

    def __init__(self, inner: Captioner, engine: ContinuousBatching, render: bool = False) -> None:
        super().__init__(inner)
        self.engine, self.render = engine, render

    def caption(self, requests: Sequence[CaptionRequest]) -> list[str]:
        texts = self._answers(requests)
        self.engine.generate([(request_images(r), output_tokens(r.kind, t)) for r, t in zip(requests, texts,
                                                                                            strict=True)],
                             [request_prefix(r) for r in requests])
        return texts

    def _answers(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """The inner answers; without `render`, a `BatchCaptioner` that reads no pixels of the drawn images
        (fake) skips drawing them (CPU the emulated GPU would not spend)."""
        if self.render or not isinstance(self.inner, BatchCaptioner):
            return self.inner.caption(requests)
        answers = self.inner.generate(requests, [[] for _ in requests])
        return [self.inner.finish(r, a) for r, a in zip(requests, answers, strict=True)]


def video_frames(url: str) -> int:
    """The frames of a frame-list video data URL (`data:video/jpeg;base64,<frame>,<frame>,...`)."""
    return url.split("base64,", 1)[-1].count(",") + 1


def serve_openai(engines: ContinuousBatching | Sequence[ContinuousBatching], host: str = "127.0.0.1",
                 port: int = 0) -> ThreadingHTTPServer:
    """A local OpenAI-compatible chat-completions server whose latency follows `engines` (started in a
    daemon thread; `server.server_address` has the port; `server.shutdown()` stops it). Several engines are
    a data-parallel server (`vllm serve --data-parallel-size`): each request goes to the least loaded one
    (`ContinuousBatching.load`). The answer is a deterministic text made from the prompt; its length follows
    the request kind the prompt names. Images are counted as `request_images` does; the server models no
    prefix cache (a request does not say which of its images are shared)."""
    pool = [engines] if isinstance(engines, ContinuousBatching) else list(engines)
    if not pool:
        raise ValueError("serve_openai needs at least one engine")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            content = body["messages"][-1]["content"]
            images = sum(1 for part in content if part.get("type") == "image_url") + sum(
                -(-video_frames(part["video_url"]["url"]) // 2) for part in content
                if part.get("type") == "video_url")  # a video: half its frames (temporal patch of 2)
            prompt = " ".join(part.get("text", "") for part in content if part.get("type") == "text")
            kind = "entities" if "entities" in prompt.lower() else "instance" if "ID:" in prompt else "global"
            tokens = output_tokens(kind, prompt)
            min(pool, key=ContinuousBatching.load).generate([(images, tokens)])
            words = " ".join(f"w{(zlib.crc32(prompt.encode()) + i) % 997}" for i in range(tokens * 3 // 4))
            text = f"Caption: {words}.\nEntities: object" if kind == "entities" else f"A {words}."
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # the listen backlog: workers open hundreds of connections at once

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="instvl-emulated-openai").start()
    return server
