"""Prefect set-up shared by every flow: offline defaults, library logs in run logs, one API server.

With no `PREFECT_API_URL`, flows run on an embedded (SQLite) Prefect server. Worker processes (Ray,
process pools) would each start their own temporary server unless they are told the flow's URL, so the
embedded server is started once here and its URL exported. It is our child process rather than
Prefect's `SubprocessASGIServer`, for two reasons:
- it dies with the driver, even on `kill -9` (Linux PR_SET_PDEATHSIG, `instvl.procs`); Prefect's
  stops only from an atexit hook, so a killed driver left it running (~200 MB) for good;
- it starts in the background (`start_api_server`) while the caller plans and imports Prefect, and is
  waited for only before the first Prefect call (`ensure_api_server`): its ~6 s start-up overlaps.
"""

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from instvl.procs import die_with_parent, free_port

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
    base = _prefect_dir() / "logging" / "logging.yml"
    settings = yaml.safe_load(base.read_text())
    settings["loggers"]["instvl"] = {"level": level, "handlers": ["api", "console"], "propagate": False}
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    path = home / "instvl-logging.yml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


class EmbeddedServer:
    """Prefect's API app under uvicorn, as Prefect's ephemeral server runs it, in a child process that
    receives SIGTERM when the thread that started it dies (start it from the main thread)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env or {}  # settings of the caller's Prefect context that the environment lacks
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.launch()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        """Start the process on a free port; returns at once (see `wait_ready`)."""
        self.port, self.ready = free_port(), False
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(_prefect_dir().parent), "--factory",
                   "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "error", "--lifespan", "on"]
        env = {**os.environ, **self.env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)  # the server's own settings: it is not a client of another one
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent(os.getpid()))

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server answers /health; relaunch it on another port if it lost a port race."""
        import httpx

        deadline, relaunches = time.monotonic() + timeout_s, 0
        while not self.ready:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                if relaunches >= 2:
                    raise RuntimeError(f"the embedded Prefect server exited with code {code} while "
                                       "starting (its output is above)")
                relaunches += 1
                self.launch()  # e.g. another process took the port between our probe and its bind
                continue
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                self.ready = httpx.get(f"{self.api_url}/health", timeout=5.0).status_code == 200
            if not self.ready:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the embedded Prefect server did not answer within {timeout_s:g} s; raise "
                        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or point PREFECT_API_URL at a "
                        "running server")
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s (as Prefect stops its own)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_SERVER: EmbeddedServer | None = None


def start_api_server() -> str:
    """The API URL flows and workers use, exported as PREFECT_API_URL: the user's server, or the
    embedded one, started here once and not waited for (`ensure_api_server` waits)."""
    global _SERVER
    ours = _SERVER.api_url if _SERVER is not None and _SERVER.process is not None else None
    url = os.environ.get("PREFECT_API_URL")
    if url and url != ours:
        return url  # the user's server
    imported = "prefect.context" in sys.modules  # e.g. an embedding application or a test harness
    if imported and (url := _configured_api_url()) and url != ours:
        _export(url)  # workers inherit it instead of starting their own server
        return url
    if ours is not None:
        _export(ours)
        return ours
    # Start first, then import Prefect (seconds) while the server boots.
    server = EmbeddedServer(env=_context_settings() if imported else None)
    if not imported and (url := _configured_api_url()):  # the active profile names a server
        server.stop()
        _export(url)
        return url
    _SERVER = server
    atexit.register(server.stop)
    _export(server.api_url)
    log.info("embedded Prefect server starting at %s", server.api_url)
    return server.api_url


def ensure_api_server() -> str:
    """`start_api_server`, then wait until the embedded server answers: call before any Prefect call."""
    url = start_api_server()
    if _SERVER is not None and url == _SERVER.api_url:
        _SERVER.wait_ready(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 180)))
        url = _SERVER.api_url
        _export(url)  # it moved to another port if it had to be relaunched
    return url


def stop_api_server() -> None:
    """Stop the embedded server, if this process started one (the next flow starts a new one)."""
    global _SERVER
    server, _SERVER = _SERVER, None
    if server is not None:
        server.stop()
        if os.environ.get("PREFECT_API_URL") == server.api_url:
            del os.environ["PREFECT_API_URL"]
            _refresh_settings()


def server_alive(timeout_s: float = 3.0) -> bool:
    """True while the API server lives: the embedded server's process runs, another server answers."""
    if _SERVER is not None:  # a busy server may answer slowly; only its exit is certain
        return _SERVER.alive()
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return True
    import httpx

    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code < 500
    except httpx.HTTPError:
        return False


def _prefect_dir() -> Path:
    """The installed prefect package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise ImportError("prefect is not installed: pip install 'instvl[flows]'")
    return Path(spec.origin).parent


def _context_settings() -> dict[str, str]:
    """Settings of the caller's Prefect context (e.g. a temporary PREFECT_HOME) as variables."""
    from prefect.settings import get_current_settings

    return get_current_settings().to_environment_variables(exclude_unset=True)


def _export(url: str) -> None:
    """Set PREFECT_API_URL for this process (Prefect's settings included) and the workers it starts."""
    if os.environ.get("PREFECT_API_URL") != url:
        os.environ["PREFECT_API_URL"] = url
        _refresh_settings()


def _refresh_settings() -> None:
    """Make an already imported Prefect see PREFECT_API_URL (it reads the environment once)."""
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


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
