"""The config of `instvl build`: the annotation config plus the flow's Prefect settings (Prefect-free)."""

from pydantic import Field

from instvl.annotate.config import AnnotateConfig
from instvl.config import BaseConfig
from instvl.flows.runners import RunnerConfig


class FlowConfig(BaseConfig):
    """Prefect settings of `instvl build`."""

    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    units_per_task: int = Field(1, ge=1)
    """Units one task runs one after another through one engine: with `engine.mode: stream` the next
    unit's clips enter the models while the previous unit's last clips are tracked and captioned, so the
    GPU does not drain and refill at every unit (GPU presets: 8). Each unit is still written and resumed
    on its own; a failed unit does not stop the others of its task, whose retry redoes what is not done."""
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(2.0, ge=0)
    """Delay before the first retry of a failed unit; it doubles for each further retry."""
    unit_timeout_s: float | None = Field(6 * 3600.0, gt=0)
    """A task attempt running longer than this per unit it holds fails (and is retried): a hung decoder or
    model never stalls a build."""
    retry_quarantined: bool = False
    """Redo the units that quarantined a file for a transient reason (a timeout, a reset, HTTP 5xx)."""
    new_version: bool = False
    """Rebuild every unit of an output whose plan was made with another annotation config (a new
    dataset version in place); without it such a rerun is refused instead of mixing two configs."""
    progress: bool = True
    """Show a progress bar of files and samples (on a terminal)."""


class BuildConfig(AnnotateConfig):
    """Detect, track and caption media into InstVL shards as a resumable Prefect flow.

    The `annotate/*` presets are shared with `instvl annotate run`, which drops their `flow` section.
    Units are built from `annotation()`, so the flow settings never change a row or its config hash.
    """

    flow: FlowConfig = Field(default_factory=FlowConfig)
