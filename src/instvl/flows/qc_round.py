"""`instvl qa round ROOT [OUT] --stage push|pull`: the QC round as Prefect flows.

The push stage routes samples and sends them to Label Studio (resumable: a push interrupted because
the server went away is retried with backoff and continues where its state file stops). The pull
stage, once reviewers are done, merges the verdicts into a new dataset version at OUT and writes the
QC report. Both run on Prefect's embedded server unless PREFECT_API_URL points at a real one, so a
deployment can schedule pulls.

    instvl qa round out/corpus --stage push
    instvl qa round out/corpus out/corpus-v2 --stage pull
"""

import logging
import sys
from typing import Any

from instvl.flows.prefect_env import configure_environment, ensure_api_server
from instvl.qa.round import QCRoundConfig

log = logging.getLogger(__name__)


def run_qc_round(cfg: QCRoundConfig) -> dict[str, Any]:
    """Run the stage's flow and return its summary."""
    if cfg.stage == "pull" and not cfg.output:
        raise ValueError("the pull stage needs an output dataset root "
                         "(instvl qa round ROOT OUT --stage pull)")
    configure_environment()
    ensure_api_server()
    from instvl.flows.qc_tasks import qc_pull_flow, qc_push_flow

    flow = qc_push_flow if cfg.stage == "push" else qc_pull_flow
    return flow(cfg.model_dump(mode="json"))


def main(cfg: QCRoundConfig) -> int:
    try:
        summary = run_qc_round(cfg)
    except Exception as err:  # the flow already logged the traceback; say what failed in one line
        print(f"instvl qa round: {cfg.stage} failed: {err}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    return 0
