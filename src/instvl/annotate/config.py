"""The annotation pipeline's config: ingest, phrases, detector, tracker, captioner, filter, output, flow."""

from typing import Literal

from pydantic import Field

from instvl.annotate.caption import CaptionerConfig, FakeCaptioner
from instvl.annotate.detect import DetectorConfig, FakeDetector
from instvl.annotate.phrases import PhraseConfig
from instvl.annotate.track import FakeTracker, TrackerConfig
from instvl.annotate.trajectories import TrajectoryConfig
from instvl.config import BaseConfig
from instvl.datasets.ingest import IngestConfig
from instvl.flows.runners import RunnerConfig
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
    split: Literal["train", "val", "test"] = "train"
    caption_cache: bool = True
    """Cache captions by (model, prompt, settings, pixels, boxes) so reruns do not re-caption."""
    cache_dir: str | None = None
    """Folder of the caption cache (an SQLite file); None: OUTPUT/.cache. Point several builds at one
    folder (e.g. a rebuild into a new output after changing a tracker threshold) to share captions."""


class FlowConfig(BaseConfig):
    """Prefect settings of `instvl build`."""

    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(2.0, ge=0)
    progress: bool = True


class AnnotateConfig(BaseConfig):
    """Detect, track and caption media into InstVL shards."""

    input: str | None = None
    """A folder, a glob or an fsspec URL of videos and images."""
    output: str | None = None
    """The dataset root to write."""
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    phrases: PhraseConfig = Field(default_factory=PhraseConfig)
    detector: DetectorConfig = Field(default_factory=FakeDetector.Config)
    tracker: TrackerConfig = Field(default_factory=FakeTracker.Config)
    trajectories: TrajectoryConfig = Field(default_factory=TrajectoryConfig)
    captioner: CaptionerConfig = Field(default_factory=FakeCaptioner.Config)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Which samples are flagged for Label Studio review (reasons kept in qc.route_reasons)."""
    out: OutputConfig = Field(default_factory=OutputConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)

    def model_ids(self) -> dict[str, str]:
        """Role -> backend:model id, recorded in every row's provenance."""
        return {"detector": _model_id(self.detector), "tracker": _model_id(self.tracker),
                "captioner": _model_id(self.captioner)}


def _model_id(cfg: BaseConfig) -> str:
    kind = getattr(cfg, "kind", "?")
    if getattr(cfg, "tiny_random", False):
        return f"{kind}:tiny-random"
    model = getattr(cfg, "model", None) or getattr(cfg, "config_path", None) or getattr(cfg, "mode", None)
    return f"{kind}:{model}" if model else str(kind)
