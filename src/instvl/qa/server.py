"""Run a local Label Studio server confined to one review-media folder: offline, loopback, private files.

The server lives in its own virtual environment (its pins clash with ours), so it is started by path:

    python -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install 'label-studio==1.23.2'
    export LABEL_STUDIO_USERNAME=admin@example.com LABEL_STUDIO_PASSWORD=... LABEL_STUDIO_API_KEY=...
    instvl qa serve

A fresh data dir spends 40-70 s in database migrations; with `serve.template_cache` set, an initialised
data dir is made once per Label Studio version and credentials, then copied (a few seconds).

What a reviewer can reach is confined to one review-media folder (`qa.confinement`: which folders
may be served, and how a push stages media into them). Also closed here:
- LOCAL_FILES_SERVING_ENABLED is on only for `start`, never for `init`; both are set explicitly, which
  also stops Label Studio auto-enabling serving of a `mydata/` folder found in the working directory
  (the server runs with the data dir as its working directory anyway).
- Private files: the data dir, the review-media root, the template cache and its templates are 0700,
  their files 0600 (tightened on every start, for dirs made by older versions), the server log 0600,
  and the server and `init` run with umask 077.
- Bind 127.0.0.1 (`serve.host` accepts loopback addresses only); ALLOWED_HOSTS is the loopback names,
  so a DNS-rebinding page cannot talk to it; CORS_ALLOW_ALL_ORIGINS off.
- Signup only with the organisation's invite link; creating more organisations and organisation
  webhooks off; SSRF protection on (cloud storages, webhooks and URL imports cannot reach the host's
  or the local network's services).
- DEBUG, DEBUG_MODAL_EXCEPTIONS, DEBUG_PROPAGATE_EXCEPTIONS and tracebacks of export converters off;
  no version check, Sentry or analytics (no outbound traffic).
- Every setting above is pinned in all the spellings Label Studio reads (LABEL_STUDIO_X, HEARTEX_X, X),
  and every other LABEL_STUDIO_*/HEARTEX_* variable of the caller's shell is dropped, so a stray
  `DEBUG=1` or `LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/` cannot widen it again.
Not closed (Label Studio Community has no switch): every organisation member sees every project, and
can register an ML backend URL that the server then calls.

Lifecycle. The server is a child that dies with its parent: it runs in its own session (a Ctrl-C at the
terminal reaches only `instvl`), `qa serve` stops it on SIGINT, SIGTERM and SIGHUP, and on Linux the
child asks for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so even `kill -9` of `instvl`
leaves no orphan. PR_SET_PDEATHSIG follows the *thread* that started the child: call `start` from a
thread that lives as long as the server (the main thread). Ownership is recorded in
`<data_dir>/instvl-serve.json` (the server's PID, the `instvl` PID and a random nonce that only the
server's environment carries); `start` refuses, naming the port and the PID, when that data dir has a
live server or something already listens on the port, and the health check after starting verifies
that the process answering on the port carries the nonce (Label Studio itself would silently move to
the next free port), so a server it did not start is never reported as its own.
"""

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from instvl.procs import describe_listener, die_with_parent, free_port, listening_pids, port_in_use
from instvl.qa.client import LabelStudioUnavailable, wait_healthy
from instvl.qa.confinement import check_document_root, private_dir, restrict_tree, review_media_root
from instvl.qa.settings import QAConfig, ServeStepConfig

log = logging.getLogger(__name__)

DEFAULT_VENV_BIN = Path(".venv-labelstudio/bin/label-studio")
INSTALL_HINT = ("python -m venv .venv-labelstudio && "
                ".venv-labelstudio/bin/pip install 'label-studio==1.23.2' (or set serve.label_studio_bin)")
LOOPBACK_NAMES = "127.0.0.1,localhost,[::1]"
# Label Studio settings pinned for every server process, by their bare names (see `pinned`).
HARDENED_ENV = {
    "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "ALLOW_ORGANIZATION_CREATION": "false", "ALLOW_ORGANIZATION_WEBHOOKS": "false",
    "SSRF_PROTECTION_ENABLED": "true", "USE_DEFAULT_BANNED_SUBNETS": "true",
    "ALLOWED_HOSTS": LOOPBACK_NAMES, "CORS_ALLOW_ALL_ORIGINS": "false",
    "DEBUG": "false", "DEBUG_MODAL_EXCEPTIONS": "false", "DEBUG_PROPAGATE_EXCEPTIONS": "false",
    "SHOW_TRACEBACK_FOR_EXPORT_CONVERTER": "false",
}
# Label Studio also reads bare USERNAME/PASSWORD; drop them so a shell's values never become the admin.
SCRUBBED_ENV = ("USERNAME", "PASSWORD", "USER_TOKEN")
SERVER_UMASK = 0o077
OWNER_FILE = "instvl-serve.json"
"""In the data dir: who runs the server on it (see `ServerOwner`)."""
NONCE_ENV = "INSTVL_SERVE_NONCE"
"""Carried only by the environment of a server `LabelStudioServer.start` made: proof of ownership."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ServerConflict(RuntimeError):
    """The port or the data dir is held by a server this process did not start."""


def pinned(settings: dict[str, str]) -> dict[str, str]:
    """`settings` in every spelling Label Studio reads: LABEL_STUDIO_X first, then HEARTEX_X, then X."""
    env = {}
    for name, value in settings.items():
        env[f"LABEL_STUDIO_{name}"] = env[f"HEARTEX_{name}"] = env[name] = value
    return env


class ServeConfig(QAConfig):
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
            raise FileNotFoundError(f"label_studio_bin {path} does not exist; "
                                    f"install it with: {INSTALL_HINT}")
        return path.absolute()  # the server runs in its data dir
    if DEFAULT_VENV_BIN.is_file():
        return DEFAULT_VENV_BIN.resolve()
    on_path = shutil.which("label-studio")
    if on_path:
        return Path(on_path).absolute()
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


def process_nonce(pid: int) -> str | None:
    """The ownership nonce in the environment of process `pid`; None when absent or unreadable."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{NONCE_ENV}=".encode()
    values = (item[len(prefix):].decode() for item in environ.split(b"\0") if item.startswith(prefix))
    return next(values, None)


class ServerOwner:
    """`<data_dir>/instvl-serve.json`: the server's PID and URL, the PID that started it and the nonce."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / OWNER_FILE

    def read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and {"pid", "nonce"} <= record.keys() else None

    def live(self) -> dict[str, Any] | None:
        """The record when its server still runs (its PID carries the nonce), else None (stale or none)."""
        record = self.read()
        if record is None:
            return None
        if Path("/proc/self/environ").is_file():
            return record if process_nonce(int(record["pid"])) == record["nonce"] else None
        try:  # no /proc: a live PID is the best evidence left
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return record

    def write(self, record: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".tmp-{os.getpid()}-{OWNER_FILE}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as out:
            json.dump(record, out)
        os.replace(tmp, self.path)

    def remove(self, nonce: str) -> None:
        """Delete the record if it is still `nonce`'s (a later server may have taken the data dir over)."""
        record = self.read()
        if record is not None and record.get("nonce") == nonce:
            self.path.unlink(missing_ok=True)


def server_env(data_dir: Path, document_root: Path | None, credentials: Credentials) -> dict[str, str]:
    """The environment of a server process: hardened and offline (see the module docstring).

    Local files are served from `document_root`; None (for `init`) disables serving.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUBBED_ENV and not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
    serving = {"LOCAL_FILES_SERVING_ENABLED": "false"} if document_root is None else {
        "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(document_root)}
    env.update(pinned({**HARDENED_ENV, **serving}))
    env.update(credentials.env())
    # Exported, not only --data-dir: otherwise Label Studio also creates folders in the user's home.
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), XDG_CONFIG_HOME=str(data_dir / "xdg"))
    return env


def is_initialised(data_dir: Path) -> bool:
    return (data_dir / "label_studio.sqlite3").is_file()


def init_data_dir(executable: Path, data_dir: Path, credentials: Credentials, timeout_s: float = 600) -> None:
    """Migrate a new data dir and create the admin user, token and organisation (no server)."""
    private_dir(data_dir)
    env = server_env(data_dir, None, credentials)
    log.info("initialising Label Studio data dir %s (database migrations, about a minute)", data_dir)
    result = subprocess.run([str(executable), "init", "--quiet", "--data-dir", str(data_dir)], env=env,
                            cwd=data_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout_s, umask=SERVER_UMASK)
    if result.returncode != 0 or not is_initialised(data_dir):
        raise RuntimeError(f"label-studio init of {data_dir} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")


def template_dir(executable: Path, cache: Path, credentials: Credentials) -> Path:
    """An initialised data dir for this Label Studio version and these credentials, made once (private)."""
    private_dir(cache)
    target = cache / f"label-studio-{label_studio_version(executable)}-{credentials.fingerprint()}"
    if is_initialised(target):
        restrict_tree(target)  # made world-readable by an older version
        return target
    building = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    shutil.rmtree(building, ignore_errors=True)
    init_data_dir(executable, building, credentials)
    restrict_tree(building)
    with contextlib.suppress(OSError):  # another process finished the same template first: keep theirs
        building.rename(target)
    shutil.rmtree(building, ignore_errors=True)
    return target


def prepare_data_dir(executable: Path, data_dir: Path, credentials: Credentials, cache: Path | None) -> None:
    """A private data dir: an initialised one is kept, else the cached template (if any) is copied in."""
    if not is_initialised(data_dir) and cache is not None:
        template = template_dir(executable, cache, credentials)
        shutil.copytree(template, data_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("xdg"))
    private_dir(data_dir)
    restrict_tree(data_dir)


class LabelStudioServer:
    """A Label Studio process on loopback, healthy inside the `with` block and stopped (by PID) after it.

    It serves local files from `document_root` only, which must pass `check_document_root`. It is a
    child that dies with its parent, and `start` refuses a port or data dir held by another server
    (see "Lifecycle" in the module docstring).
    """

    def __init__(self, options: ServeStepConfig, credentials: Credentials, document_root: str | Path,
                 port: int | None = None):
        self.options, self.credentials = options, credentials
        self.executable = find_label_studio(options.label_studio_bin)
        self.data_dir = Path(options.data_dir).expanduser().resolve()
        self.document_root = check_document_root(document_root, data_dir=self.data_dir,
                                                 cache=options.template_cache)
        self.host = options.host
        self.port = port or options.port or free_port(self.host)
        self.process: subprocess.Popen | None = None
        self.owner = ServerOwner(self.data_dir)
        self.nonce = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def check_free(self) -> None:
        """ServerConflict when a live server owns the data dir or anything listens on the port."""
        running = self.owner.live()
        if running is not None:
            raise ServerConflict(
                f"Label Studio pid {running['pid']} (started by instvl pid {running.get('serve_pid')}) "
                f"already runs on the data dir {self.data_dir} at {running.get('url')}; use it "
                f"(--set server.url={running.get('url')}), stop it (kill {running.get('serve_pid')}), "
                "or set serve.data_dir to another folder")
        if port_in_use(self.host, self.port):
            raise ServerConflict(
                f"port {self.port} on {self.host} is already in use by {describe_listener(self.port)}, "
                "which this command did not start; stop it, or set serve.port to another port "
                "(0: any free one)")

    def owns_port(self) -> bool:
        """Whether the process listening on our port is the server we started (it carries our nonce).

        True without /proc to tell (`check_free` before starting is then the only guard).
        """
        pids = listening_pids(self.port)
        if pids is None:
            return self.process is not None and self.process.poll() is None
        return bool(self.nonce) and any(process_nonce(pid) == self.nonce for pid in pids)

    def start(self) -> "LabelStudioServer":
        self.check_free()
        cache = Path(self.options.template_cache).expanduser() if self.options.template_cache else None
        prepare_data_dir(self.executable, self.data_dir, self.credentials, cache)
        private_dir(self.document_root)
        cmd = [str(self.executable), "start", "--no-browser", "--internal-host", self.host,
               "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.nonce = secrets.token_hex(16)
        env = {**server_env(self.data_dir, self.document_root, self.credentials), NONCE_ENV: self.nonce}
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(log_fd, 0o600)
        with open(log_fd, "ab") as log_file:
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop it (no double signal).
            process = subprocess.Popen(cmd, env=env, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT, umask=SERVER_UMASK,
                                       start_new_session=True, preexec_fn=die_with_parent(os.getpid()))
            self.process = process
        try:
            self.owner.write({"pid": process.pid, "serve_pid": os.getpid(), "nonce": self.nonce,
                              "url": self.url, "started_at": datetime.now(UTC).isoformat()})
            log.info("started Label Studio (pid %d) at %s serving %s, log %s", process.pid, self.url,
                     self.document_root, self.log_path)
            try:
                wait_healthy(self.url, self.options.start_timeout_s,
                             alive=lambda: process.poll() is None)
            except LabelStudioUnavailable as err:
                raise LabelStudioUnavailable(f"{err}; see the server log {self.log_path}") from None
            if not self.owns_port():
                raise ServerConflict(
                    f"port {self.port} on {self.host} is answered by {describe_listener(self.port)}, not by "
                    f"the Label Studio this command started (pid {process.pid}); stop that process, "
                    "or set serve.port to another port (0: any free one)")
        except BaseException:  # also a signal or Ctrl-C during the (long) start: never leave it running
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 20) -> None:
        """Terminate our own process by PID; kill it if it does not exit in time."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self.nonce:
            self.owner.remove(self.nonce)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Stopped(KeyboardInterrupt):
    """A stop signal arrived (SIGINT, SIGTERM or SIGHUP); a KeyboardInterrupt so every layer unwinds."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """Raise `Stopped` on the first stop signal (later ones are ignored while we clean up); yields the
    names of the signals received. Handlers are installed only in the main thread and restored after;
    SIGINT and SIGHUP stay ignored where the caller ignores them (`nohup`, a script's `cmd &`)."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        if len(received) == 1:
            raise Stopped(received[0])

    wanted = [sig for sig in STOP_SIGNALS if sig == signal.SIGTERM or signal.getsignal(sig) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(cfg: ServeConfig) -> int:
    """Start the server described by `cfg` and serve until a stop signal (Ctrl-C, SIGTERM, SIGHUP)."""
    try:
        credentials = Credentials.from_env(cfg.serve.username_env, cfg.serve.password_env,
                                           cfg.server.token_env)
        server = LabelStudioServer(cfg.serve, credentials, review_media_root(cfg))
    except (ValueError, FileNotFoundError) as err:
        print(f"instvl qa serve: {err}", file=sys.stderr)
        return 1
    with stop_on_signals() as received:
        try:
            server.start()
        except RuntimeError as err:  # ServerConflict, LabelStudioUnavailable, a failed init
            print(f"instvl qa serve: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"instvl qa serve: stopped while starting ({received[0] if received else 'SIGINT'})",
                  file=sys.stderr)
            return 1
        process = server.process
        assert process is not None  # started
        try:
            print(f"Label Studio is up at {server.url} (pid {process.pid}, "
                  f"user {credentials.username}, data {server.data_dir}, "
                  f"serving media from {server.document_root})", flush=True)
            print(f"point clients at it with: --set server.url={server.url}; stop with Ctrl-C or "
                  f"kill {os.getpid()}", flush=True)
            code = process.wait()
        except KeyboardInterrupt:
            server.stop()  # before printing: whoever sent the signal may be waiting for the port
            print(f"stopped Label Studio ({received[0] if received else 'SIGINT'})", flush=True)
            return 0
        finally:
            server.stop()
    print(f"instvl qa serve: Label Studio exited by itself (code {code}); "
          f"see the server log {server.log_path}", file=sys.stderr)
    return 1
