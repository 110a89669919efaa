"""The QC round's config and summaries, shared by the `instvl qa round` command and its Prefect flows.

Kept free of Prefect so the flows module imports downward only: flows -> qa, never qa -> flows.
"""

from dataclasses import asdict, is_dataclass
from typing import Any, Literal

from pydantic import Field

from instvl.qa.settings import QAConfig


class QCRoundConfig(QAConfig):
    """The `qa/local` sections plus the round's stage and its dataset roots."""

    stage: Literal["push", "pull"] = "push"
    root: str
    """The dataset root under review."""
    output: str | None = None
    """The new dataset version the pull stage writes (required for pull)."""
    retries: int = Field(3, ge=0)
    retry_delay_s: float = Field(5.0, ge=0)

    def pull_output(self) -> str:
        """The new version's root for the pull stage; a clear error when it is not set."""
        if not self.output:
            raise ValueError("the pull stage writes a new dataset version: set `output` "
                             "(instvl qa round ROOT OUT)")
        return self.output

    def sections(self) -> dict[str, Any]:
        """The `qa/local` sections alone (JSON-ready), to build a push or pull config from."""
        return self.model_dump(mode="json", include=set(QAConfig.model_fields))


def summary_dict(summary: Any) -> dict[str, Any]:
    """A push or pull summary (a dataclass) as a plain dict, the shape a flow returns."""
    return asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else dict(summary)
