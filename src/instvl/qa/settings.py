"""The configuration shared by `instvl qa serve|push|pull`: one preset (`qa/local`) with a section per step.

Every command's config class derives from `QAConfig`, so all of them accept the whole preset and
differ only in their positional fields (`root`, `output`).
"""

from typing import Literal

from pydantic import Field

from instvl.config import BaseConfig
from instvl.qa.client import ClientConfig
from instvl.qa.routing import RoutingConfig


class ServeStepConfig(BaseConfig):
    """How `instvl qa serve` (and the test fixture) start a local server."""

    label_studio_bin: str | None = None
    """The `label-studio` executable; default .venv-labelstudio/bin/label-studio, else the one on PATH."""
    data_dir: str = "~/.local/share/instvl/label-studio"
    """SQLite database (with the admin token), secret key, uploads and exports of the local server (0700)."""
    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    """Bind address: loopback only (the server is a development server, and reviewers' files are private)."""
    port: int | None = Field(8080, ge=0, le=65535)
    """Port to listen on; null or 0 picks a free one."""
    username_env: str = "LABEL_STUDIO_USERNAME"
    """Environment variable holding the admin user's e-mail."""
    password_env: str = "LABEL_STUDIO_PASSWORD"
    """Environment variable holding the admin user's password."""
    template_cache: str | None = "~/.cache/instvl"
    """Where an initialised data dir per version and credentials is kept for fast first starts (0700;
    it holds the admin token too); null: none."""
    start_timeout_s: float = Field(300.0, gt=0)
    """How long to wait for /health after starting (migrations on a loaded machine are slow)."""


class PushStepConfig(BaseConfig):
    """What `instvl qa push` sends."""

    select: Literal["routed", "all"] = "routed"
    """'routed': only samples with a routing reason (review or audit); 'all': every unreviewed sample."""
    batch_size: int = Field(16, ge=1)
    """Tasks per import request; the push state is saved after each batch."""
    limit: int | None = Field(None, ge=1)
    """Push at most this many new samples (null: no limit)."""
    review_media: Literal["source", "stored"] = "source"
    """What reviewers see. 'source': each clip or image made again from its source file (`source.uri`),
    with the stored clip's frames and timing, at `review_height`; the stored media when the source cannot
    be used (missing, changed, undecodable), with a warning naming the sample. 'stored': the media the
    row embeds, a training rendition that can be smaller than the frames the models annotated
    (`qa.review_media`)."""
    review_height: int | None = Field(480, ge=16)
    """The review size: media made from the source have their short side shrunk to at most this, and
    videos lower than this are scaled up to it (Label Studio never draws a video larger than its own
    size); null: the source's own size, and the embedded clip as it is."""
    reroute: bool = False
    """false: push the samples annotation routed (their stored qc.route_reasons, decided by the annotate
    preset's `routing`); true: route every row again with this preset's `routing` thresholds instead."""


class PullStepConfig(BaseConfig):
    """How `instvl qa pull` merges reviews."""

    box_tolerance: float = Field(0.005, ge=0)
    """Reviewed boxes closer than this (normalised units) to the prediction count as unchanged."""
    overwrite: bool = False
    """Replace units already written at the output root."""


class QAConfig(BaseConfig):
    """Sections of the `qa/local` preset."""

    server: ClientConfig = ClientConfig()
    serve: ServeStepConfig = ServeStepConfig()
    routing: RoutingConfig = RoutingConfig()
    push: PushStepConfig = PushStepConfig()
    pull: PullStepConfig = PullStepConfig()
