"""The annotation pipeline's config: ingest, phrases, detector, tracker, captioner, filter, routing, output.

How the units are scheduled (`instvl build`'s Prefect settings) is not annotation: `flows.config.BuildConfig`
adds that as a `flow` section on top of this class.
"""

from typing import Literal

from pydantic import Field, model_validator

from instvl.annotate.caption import CaptionerConfig, PixelCaptioner
from instvl.annotate.detect import DetectorConfig, PixelDetector
from instvl.annotate.phrases import PhraseConfig
from instvl.annotate.track import FakeTracker, TrackerConfig
from instvl.annotate.trajectories import TrajectoryConfig
from instvl.annotate.weights import Weights, check_weights, random_parts, weights_of
from instvl.config import BaseConfig
from instvl.media.encode import VideoEncodingConfig
from instvl.media.ingest import IngestConfig
from instvl.qa.routing import RoutingConfig


class FilterConfig(BaseConfig):
    """Which annotated instances and samples are kept."""

    min_instances: int = Field(0, ge=0)
    """Samples with fewer instances are quarantined with reason 'too few instances'."""
    drop_bad_instance_captions: bool = False
    """Drop instances whose caption fails the cleaning checks (otherwise keep and flag for review)."""
    max_instances: int = Field(32, ge=1)
    """Keep at most this many instances per sample (highest score first)."""


class OutputConfig(BaseConfig):
    """How samples become shards."""

    sources_per_unit: int = Field(16, ge=1)
    """Input files per work unit; a unit writes one shard (more parts past target_shard_bytes)."""
    target_shard_bytes: int = Field(256 << 20, ge=1 << 16)
    row_group_rows: int = Field(16, ge=1)
    embed_media: bool = True
    """Embed the clip (re-encoded MP4) or image bytes in each row; otherwise keep only source.uri."""
    video: VideoEncodingConfig = Field(default_factory=VideoEncodingConfig)
    """How embedded clips are encoded: quality (crf) and random access for training (keyint, bframes)."""
    split: Literal["train", "val", "test"] = "train"
    caption_cache: bool = True
    """Cache captions by (model, prompt, settings, pixels, boxes) so reruns do not re-caption."""
    cache_dir: str | None = None
    """Folder of the caption cache (an SQLite file); None: OUTPUT/.cache. Point several builds at one
    folder (e.g. a rebuild into a new output after changing a tracker threshold) to share captions."""


class ModelMemoryConfig(BaseConfig):
    """What one model may take on the GPU: weights plus its working memory (activations, buffers)."""

    weights_gib: float = Field(0.0, ge=0)
    working_gib: float = Field(0.0, ge=0)

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.working_gib


class MemoryPlanConfig(BaseConfig):
    """How one GPU is shared by the unit's models: the detector and tracker take what they state, the
    CUDA context and allocator slack take `reserve_gib`, and a vLLM captioner gets the rest as its
    `gpu_memory_utilization` (weights + KV cache). A plan that cannot fit fails before any model loads,
    with the numbers."""

    gpu_gib: float | None = Field(None, gt=0)
    """The GPU's memory; None: read from the device (torch.cuda). Set it to plan for a smaller card."""
    device: int = 0
    detector: ModelMemoryConfig = Field(default_factory=ModelMemoryConfig)
    tracker: ModelMemoryConfig = Field(default_factory=ModelMemoryConfig)
    captioner: ModelMemoryConfig = Field(default_factory=ModelMemoryConfig)
    """For an in-process vLLM captioner: its weights, and the least KV cache worth running with."""
    reserve_gib: float = Field(1.5, ge=0)
    """CUDA contexts, the caching allocator's fragmentation, NCCL/cuBLAS workspaces."""
    max_fraction: float = Field(0.92, gt=0, le=1)
    """Never give vLLM more than this fraction of the GPU, however much is left."""


class EngineConfig(BaseConfig):
    """How a unit's clips flow through the models (`annotate.engine`); changes no row, nor the config hash.

    `stream` runs `clips_in_flight` clips at once: decoding runs ahead in worker processes, keyframes of
    many clips share detector batches, and caption requests of many clips share captioner calls. `serial`
    is the one-clip-at-a-time path (for debugging and as the benchmark's baseline)."""

    mode: Literal["stream", "serial"] = "stream"
    clips_in_flight: int = Field(32, ge=1)
    """Clips being annotated at once (each holds its decoded frames: this bounds memory)."""
    decode_workers: int = Field(2, ge=1)
    """Crash-isolated decode processes."""
    decode_ahead: int = Field(8, ge=0)
    """Decoded clips that may wait for a free annotation slot (queue size between decode and models)."""
    detect_batch: int | None = Field(None, ge=1)
    """Keyframes per detector call; None: the detector's `batch_size`."""
    caption_batch: int | None = Field(None, ge=1)
    """Requests per captioner call; None: the captioner's `batch_size` (vLLM: one `llm.chat` per call)."""
    caption_calls: int | None = Field(None, ge=1)
    """Captioner calls in flight at once; None: the captioner's `concurrency` (openai; vllm fed continuously)
    with one request per call, or 1."""
    linger_s: float = Field(0.005, ge=0)
    """How long a batcher waits for more work before it launches a batch that is not full."""
    detect_hold_s: float = Field(0.5, ge=0)
    """Longest a keyframe waits for a full detector batch (sooner when no more keyframes are coming) while
    at most `detect_low_water` clips are ready for the tracker."""
    detect_low_water: int = Field(4, ge=0)
    """Clips being tracked or queued for the tracker above which held keyframes wait for a full detector
    batch however long it takes (the tracker is not waiting on them)."""
    caption_fill: int = Field(0, ge=0)
    """Instance-caption requests are held until they and the requests in captioner calls reach this many,
    then sent together (0: none held): a self-scheduling engine (vLLM) is then kept at `caption_fill`
    sequences while held work lasts. They go sooner when at most `caption_low_water` clips are ahead of the
    tracker, or after `caption_hold_s`."""
    caption_low_water: int = Field(4, ge=0)
    """Clips ahead of the tracker (detecting, tracking, or with their entities caption running) below
    which held caption requests go."""
    caption_hold_s: float = Field(5.0, ge=0)
    """Longest a caption request is held for `caption_fill`."""
    caption_hold_entities: bool = False
    """Hold entity (and global) caption requests as instance ones are while more than `caption_low_water`
    clips are ahead of the tracker. For one GPU shared by every model (`annotate/gpu`): the captioner then
    runs full batches and the tracker has the GPU in between, instead of many small captioner steps."""
    caption_waves: bool = False
    """Held caption requests go in waves that start and end together: not while the captioner runs one,
    nor while clips start or the clip slots fill at the run's start, and the last clips' only once nothing
    is ahead of the tracker. For a captioner on the tracker's GPU (`annotate/gpu`), where a request that
    joins a wave's tail runs on in small steps that take the tracker's turns; where the captioner has a GPU
    of its own, the tracker would wait for each wave's end instead."""
    tracker_sessions: int = Field(1, ge=1)
    """Clips tracked at once (one tracker session each, every object of the window in it)."""
    prefetch_keyframes: bool = True
    """Detect all keyframes of a clip as soon as its phrases are known (the builder then finds them done)."""
    memory: MemoryPlanConfig | None = None
    """The GPU memory plan; None: no plan (CPU backends, or models on separate devices)."""


class AnnotateConfig(BaseConfig):
    """Detect, track and caption media into InstVL shards."""

    input: str | None = None
    """A folder, a glob or an fsspec URL of videos and images."""
    output: str | None = None
    """The dataset root to write."""
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    phrases: PhraseConfig = Field(default_factory=PhraseConfig)
    # The defaults need no weights and are not random (colour segmentation, template matching, captions
    # from pixels: the `annotate/demo` backends); a real corpus names its models in a preset.
    detector: DetectorConfig = Field(default_factory=PixelDetector.Config)
    tracker: TrackerConfig = Field(default_factory=FakeTracker.Config)
    trajectories: TrajectoryConfig = Field(default_factory=TrajectoryConfig)
    captioner: CaptionerConfig = Field(default_factory=PixelCaptioner.Config)
    random_init: bool = False
    """Allow models with random weights (tiny configs, a SAM2 or GroundingDINO backend without its
    checkpoint, the random `fake` detector): for plumbing tests only. Rows then say random_init=true in
    their provenance and `instvl datasets inspect` marks the corpus RANDOM WEIGHTS."""
    filter: FilterConfig = Field(default_factory=FilterConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Which samples are flagged for Label Studio review: the source of truth of routing. The reasons are
    stored in every row's qc.route_reasons and `instvl qa push` sends those rows (the qa preset's own
    `routing` section is applied only when a push is asked to re-route, `push.reroute: true`)."""
    out: OutputConfig = Field(default_factory=OutputConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    """How the unit is executed (batching, queues, GPU memory plan): never changes a row."""

    def rows_config(self) -> "AnnotateConfig":
        """The config the rows depend on: this one with the execution settings (`engine`) at their
        defaults, so tuning queues or batches changes no config hash."""
        return self.annotation().model_copy(update={"engine": EngineConfig()})

    def annotation(self) -> "AnnotateConfig":
        """The annotation sections alone, as a plain AnnotateConfig: what units are built from and what the
        config hash covers (sections a subclass adds, such as `instvl build`'s `flow`, change no row)."""
        if type(self) is AnnotateConfig:
            return self
        return AnnotateConfig.model_validate(self.model_dump(include=set(AnnotateConfig.model_fields)))

    @model_validator(mode="after")
    def _no_silent_random_weights(self) -> "AnnotateConfig":
        random = random_parts(self.weights())
        if random and not self.random_init:
            raise ValueError("these models would run on random weights: " + "; ".join(random) + ". Give "
                             "their checkpoints, or set random_init: true (plumbing tests only: the "
                             "corpus is marked RANDOM WEIGHTS)")
        return self

    def weights(self) -> list[Weights]:
        """Where the detector's, tracker's and captioner's weights come from."""
        return [weights_of("detector", self.detector), weights_of("tracker", self.tracker),
                weights_of("captioner", self.captioner)]

    def check_weights(self) -> None:
        """Fail before any work when a model's checkpoint is missing (a local path that does not exist,
        or a hub id that is not cached while HF_HUB_OFFLINE=1): `weights.WeightsError` says how to fix it."""
        check_weights(self.weights())

    def model_ids(self) -> dict[str, str]:
        """Recorded in every row's provenance: role -> backend:model id, and per role its weights (hub id
        and revision, or checkpoint path) and random-init flag, plus `random_init` for the whole row."""
        weights = self.weights()
        ids = {"detector": _model_id(self.detector), "tracker": _model_id(self.tracker),
               "captioner": _model_id(self.captioner),
               "random_init": str(any(w.random for w in weights)).lower()}
        for w in weights:
            ids.update(w.provenance())
        return ids


def _model_id(cfg: BaseConfig) -> str:
    kind = getattr(cfg, "kind", "?")
    if getattr(cfg, "tiny_random", False):
        return f"{kind}:tiny-random"
    model = getattr(cfg, "model", None) or getattr(cfg, "config_path", None) or getattr(cfg, "mode", None)
    return f"{kind}:{model}" if model else str(kind)
