"""Prefect set-up shared by every flow: offline defaults, library logs in run logs, one API server.

With no `PREFECT_API_URL`, flows run on Prefect's embedded (ephemeral, SQLite) server. Worker
processes (Ray, process pools) would each start their own temporary server unless they are told the
flow's URL, so `ensure_api_server` starts the embedded server once and exports its URL.
"""

import logging
import os
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # The 20 s default is too short for a loaded 2-core machine running migrations.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # Ray workers are killed at the end of a run; short batches keep their last log lines.
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.2",
    "PREFECT_UI_ENABLED": "false",
    # Library logs outside a run (planning, the final manifest) go to the console only.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def configure_environment(level: str = "INFO") -> None:
    """Set offline defaults (the user's own settings win) and route `instvl.*` logs into run logs.

    Must run before `prefect` is imported, so that the logging settings file is picked up.
    """
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "PREFECT_LOGGING_SETTINGS_PATH" not in os.environ:
        os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(_write_logging_settings(level))


def _write_logging_settings(level: str) -> Path:
    """Prefect's own logging config plus an `instvl` logger sent to the API handler (every process)."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise ImportError("prefect is not installed: pip install 'instvl[flows]'")
    base = Path(spec.origin).parent / "logging" / "logging.yml"
    settings = yaml.safe_load(base.read_text())
    settings["loggers"]["instvl"] = {"level": level, "handlers": ["api", "console"], "propagate": False}
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    path = home / "instvl-logging.yml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def ensure_api_server() -> str:
    """The API URL flows and workers use: the user's server, or the embedded one started here once."""
    url = os.environ.get("PREFECT_API_URL") or _configured_api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url  # workers inherit it instead of starting their own server
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # a process-wide singleton, reused by Prefect's own client
    server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    log.info("embedded Prefect server at %s", server.api_url)
    return server.api_url


def server_alive(timeout_s: float = 3.0) -> bool:
    """True while the API server lives: the embedded server's process runs, another server answers."""
    from prefect.server.api.server import SubprocessASGIServer

    process = next((s.server_process for s in SubprocessASGIServer._instances.values()
                    if s.server_process is not None), None)
    if process is not None:  # a busy server may answer slowly; only its exit is certain
        return process.poll() is None
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return True
    import httpx

    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code < 500
    except httpx.HTTPError:
        return False


def _configured_api_url() -> str | None:
    """The API URL of the active Prefect profile or settings context (e.g. a test harness), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def attach_library_logs(level: str = "INFO") -> None:
    """Send `instvl.*` records of this process to the run logs, whatever imported prefect first.

    The logging settings file does this in worker processes; in this process prefect may already
    have configured logging before `configure_environment` ran (an embedding application, tests).
    """
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("instvl")
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(APILogHandler())
    wanted = logging.getLevelName(level.upper())
    wanted = wanted if isinstance(wanted, int) else logging.INFO  # an unknown name: keep the default
    if logger.getEffectiveLevel() > wanted:
        logger.setLevel(wanted)


def worker_environment() -> dict[str, str]:
    """Environment variables every worker process needs to report to the same server and logs."""
    keys = [*OFFLINE_DEFAULTS, "PREFECT_API_URL", "PREFECT_LOGGING_SETTINGS_PATH", "PREFECT_HOME",
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "INSTVL_LOG_LEVEL"]
    return {k: os.environ[k] for k in keys if k in os.environ}
