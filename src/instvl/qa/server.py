"""Run a local Label Studio server: offline environment, loopback bind, credentials from the environment.

The server lives in its own virtual environment (its pins clash with ours), so it is started by path:

    python -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install 'label-studio==1.23.2'
    export LABEL_STUDIO_USERNAME=admin@example.com LABEL_STUDIO_PASSWORD=... LABEL_STUDIO_API_KEY=...
    instvl qa serve

A fresh data dir spends 40-70 s in database migrations; with `serve.template_cache` set, an initialised
data dir is made once per Label Studio version and credentials, then copied (a few seconds).
"""

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from instvl.qa.client import LabelStudioUnavailable, wait_healthy
from instvl.qa.settings import QASettings, ServeOptions

log = logging.getLogger(__name__)

DEFAULT_VENV_BIN = Path(".venv-labelstudio/bin/label-studio")
INSTALL_HINT = ("python -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install 'label-studio==1.23.2' "
                "(or set serve.label_studio_bin)")
OFFLINE_ENV = {"LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
               "COLLECT_ANALYTICS": "false", "LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
# Label Studio also reads bare USERNAME/PASSWORD; drop them so a shell's values never become the admin.
SCRUBBED_ENV = ("USERNAME", "PASSWORD", "HEARTEX_USERNAME", "HEARTEX_PASSWORD", "USER_TOKEN")


class ServeConfig(QASettings):
    """`instvl qa serve`: start a local Label Studio and keep it running until interrupted."""


class Credentials:
    """The admin user of a local server, read from environment variables (never logged or shown)."""

    def __init__(self, username: str, password: str, token: str):
        self.username, self._password, self._token = username, password, token

    @classmethod
    def from_env(cls, username_env: str, password_env: str, token_env: str) -> "Credentials":
        values = {name: os.environ.get(name, "") for name in (username_env, password_env, token_env)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ValueError(f"set the environment variable(s) {', '.join(missing)} to start Label Studio")
        if len(values[token_env]) <= 5:
            raise ValueError(f"the token in {token_env} must be longer than 5 characters")
        return cls(values[username_env], values[password_env], values[token_env])

    def env(self) -> dict[str, str]:
        return {"LABEL_STUDIO_USERNAME": self.username, "LABEL_STUDIO_PASSWORD": self._password,
                "LABEL_STUDIO_USER_TOKEN": self._token}

    def fingerprint(self) -> str:
        """A short one-way digest, so a template data dir is reused only with the same credentials."""
        return hashlib.sha256(f"{self.username}\0{self._password}\0{self._token}".encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"


def find_label_studio(configured: str | None = None) -> Path:
    """The server executable: the configured one, else .venv-labelstudio's, else `label-studio` on PATH."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"label_studio_bin {path} does not exist; install it with: {INSTALL_HINT}")
        return path
    if DEFAULT_VENV_BIN.is_file():
        return DEFAULT_VENV_BIN.resolve()
    on_path = shutil.which("label-studio")
    if on_path:
        return Path(on_path)
    raise FileNotFoundError(f"no Label Studio server found ({DEFAULT_VENV_BIN} or label-studio on PATH); "
                            f"install it with: {INSTALL_HINT}")


def label_studio_version(executable: Path) -> str:
    """The installed version, read from the dist-info next to the executable (importing it takes seconds)."""
    site = sorted(executable.resolve().parent.parent.glob("lib/python*/site-packages"))
    for folder in site:
        for info in folder.glob("label_studio-*.dist-info"):
            return info.name.removeprefix("label_studio-").removesuffix(".dist-info")
    out = subprocess.run([str(executable), "version"], capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_env(data_dir: Path, document_root: Path, credentials: Credentials) -> dict[str, str]:
    """The environment of the server process: offline, local files under `document_root`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(OFFLINE_ENV)
    env.update(credentials.env())
    # Exported, not only --data-dir: otherwise Label Studio also creates folders in the user's home.
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), XDG_CONFIG_HOME=str(data_dir / "xdg"),
               LOCAL_FILES_DOCUMENT_ROOT=str(document_root))
    return env


def is_initialised(data_dir: Path) -> bool:
    return (data_dir / "label_studio.sqlite3").is_file()


def init_data_dir(executable: Path, data_dir: Path, credentials: Credentials, timeout_s: float = 600) -> None:
    """Migrate a new data dir and create the admin user, token and organisation (no server)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(data_dir, data_dir, credentials)
    log.info("initialising Label Studio data dir %s (database migrations, about a minute)", data_dir)
    result = subprocess.run([str(executable), "init", "--quiet", "--data-dir", str(data_dir)], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or not is_initialised(data_dir):
        raise RuntimeError(f"label-studio init of {data_dir} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")


def template_dir(executable: Path, cache: Path, credentials: Credentials) -> Path:
    """An initialised data dir for this Label Studio version and these credentials, made once."""
    target = cache / f"label-studio-{label_studio_version(executable)}-{credentials.fingerprint()}"
    if is_initialised(target):
        return target
    building = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    shutil.rmtree(building, ignore_errors=True)
    init_data_dir(executable, building, credentials)
    with contextlib.suppress(OSError):  # another process finished the same template first: keep theirs
        building.rename(target)
    shutil.rmtree(building, ignore_errors=True)
    return target


def prepare_data_dir(executable: Path, data_dir: Path, credentials: Credentials, cache: Path | None) -> None:
    """Leave an initialised data dir alone; else copy the cached template into it when a cache is given."""
    if is_initialised(data_dir) or cache is None:
        return
    template = template_dir(executable, cache, credentials)
    shutil.copytree(template, data_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("xdg"))


class LabelStudioServer:
    """A Label Studio process on 127.0.0.1, healthy inside the `with` block and stopped (by PID) after it."""

    def __init__(self, options: ServeOptions, credentials: Credentials, document_root: str | Path,
                 port: int | None = None):
        self.options, self.credentials = options, credentials
        self.executable = find_label_studio(options.label_studio_bin)
        self.data_dir = Path(options.data_dir).expanduser().resolve()
        self.document_root = Path(document_root).expanduser().resolve()
        self.host = options.host
        self.port = port or options.port or free_port(self.host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def start(self) -> "LabelStudioServer":
        cache = Path(self.options.template_cache).expanduser() if self.options.template_cache else None
        prepare_data_dir(self.executable, self.data_dir, self.credentials, cache)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.executable), "start", "--no-browser", "--internal-host", self.host,
               "--port", str(self.port), "--data-dir", str(self.data_dir)]
        env = server_env(self.data_dir, self.document_root, self.credentials)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        log.info("started Label Studio (pid %d) at %s, log %s", self.process.pid, self.url, self.log_path)
        try:
            wait_healthy(self.url, self.options.start_timeout_s, alive=lambda: self.process.poll() is None)
        except LabelStudioUnavailable as err:
            self.stop()
            raise LabelStudioUnavailable(f"{err}; see the server log {self.log_path}") from None
        return self

    def stop(self, timeout_s: float = 20) -> None:
        """Terminate our own process by PID; kill it if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(cfg: ServeConfig) -> int:
    """Start the server described by `cfg` and serve until Ctrl-C."""
    try:
        credentials = Credentials.from_env(cfg.serve.username_env, cfg.serve.password_env, cfg.server.token_env)
        server = LabelStudioServer(cfg.serve, credentials, cfg.server.document_root)
    except (ValueError, FileNotFoundError) as err:
        print(f"instvl qa serve: {err}", file=sys.stderr)
        return 1
    with server:
        print(f"Label Studio is up at {server.url} (user {credentials.username}, data {server.data_dir})")
        print(f"point clients at it with: --set server.url={server.url}; stop with Ctrl-C")
        with contextlib.suppress(KeyboardInterrupt):
            while server.process is not None and server.process.poll() is None:
                time.sleep(1.0)
    return 0
