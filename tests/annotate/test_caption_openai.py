"""The OpenAI-compatible backend against a small chat-completions server on 127.0.0.1."""

import base64
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from instvl.annotate.caption import CaptionError, InstanceInfo, OpenAICaptioner

API_KEY = "sk-test-4f9a1c0ffee"


@dataclass
class ChatServer:
    """A chat-completions endpoint that checks request shapes and answers from the prompt."""

    fail_first: int = 0
    fail_status: int = 503
    delay_s: float = 0.0
    fail_body: dict = field(default_factory=lambda: {"error": "busy"})
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict]:
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.fail_first
        time.sleep(self.delay_s)
        if handler.path != "/v1/chat/completions":
            return 404, {"error": f"no route {handler.path}"}
        if failing:
            return self.fail_status, self.fail_body
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        with self.lock:
            self.bodies.append(body)
            self.headers.append(dict(handler.headers))
        content = body["messages"][-1]["content"]
        images = [part for part in content if part["type"] == "image_url"]
        text = next(part["text"] for part in content if part["type"] == "text")
        answer = f'Sure! Here is the caption: "{len(images)} images. {text.split()[-1]}"'
        return 200, {"id": "x", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}


@pytest.fixture
def chat_server() -> Iterator[Callable[..., tuple[ChatServer, str]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**options) -> tuple[ChatServer, str]:
        state = ChatServer(**options)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                status, payload = state.handle(self)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return state, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def make_captioner(base_url: str, **options) -> OpenAICaptioner:
    settings = {"base_url": base_url, "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                "api_key_env": "INSTVL_TEST_KEY", "backoff_s": 0.01, "max_backoff_s": 0.05,
                "timeout_s": 5.0} | options
    return OpenAICaptioner.Config(**settings).build()


def frames(count: int = 3) -> list[np.ndarray]:
    return [np.full((32, 48, 3), 40 * t, np.uint8) for t in range(count)]


def test_batch_sends_well_formed_chat_requests_in_order(chat_server, monkeypatch) -> None:
    monkeypatch.setenv("INSTVL_TEST_KEY", API_KEY)
    state, url = chat_server()
    captioner = make_captioner(url, concurrency=3, max_tokens=50, seed=7)
    ball = InstanceInfo(0, "ball", [(0.1, 0.1, 0.5, 0.5)] * 3)
    requests = [captioner.request("global", frames(count=c)) for c in (1, 2, 3)]
    requests.append(captioner.request("instance", frames(), ball))
    captions = captioner.caption(requests)
    assert captions == ["1 images. words.", "2 images. words.", "3 images. words.", "3 images. words."]
    assert len(state.bodies) == 4
    body = state.bodies[0]
    assert body["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (50, 0.0, 7)
    image_part = body["messages"][-1]["content"][0]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    assert decoded.size == (48, 32)
    assert all(h["Authorization"] == f"Bearer {API_KEY}" for h in state.headers)


def test_no_authorization_header_without_a_key(chat_server, monkeypatch) -> None:
    monkeypatch.delenv("INSTVL_TEST_KEY", raising=False)
    state, url = chat_server()
    captioner = make_captioner(url)
    captioner.caption([captioner.request("global", frames(1))])
    assert "Authorization" not in state.headers[0]


def test_transient_failures_are_retried(chat_server, caplog, monkeypatch) -> None:
    monkeypatch.setenv("INSTVL_TEST_KEY", API_KEY)
    state, url = chat_server(fail_first=2, fail_status=429)
    captioner = make_captioner(url, max_retries=3)
    with caplog.at_level(logging.DEBUG):
        assert captioner.caption([captioner.request("global", frames(1))]) == ["1 images. words."]
    assert state.calls == 3
    assert "HTTP 429 (attempt 1/4)" in caplog.text
    assert API_KEY not in caplog.text


def test_giving_up_names_the_endpoint_and_never_the_key(chat_server, caplog, monkeypatch) -> None:
    monkeypatch.setenv("INSTVL_TEST_KEY", API_KEY)
    state, url = chat_server(fail_first=10, fail_status=500)
    captioner = make_captioner(url, max_retries=2)
    giving_up = "giving up after 3 attempts: HTTP 500"
    with caplog.at_level(logging.DEBUG), pytest.raises(CaptionError, match=giving_up) as err:
        captioner.caption([captioner.request("global", frames(1))])
    assert url in str(err.value)
    assert state.calls == 3
    assert API_KEY not in caplog.text and API_KEY not in str(err.value)


def test_client_errors_are_not_retried(chat_server) -> None:
    state, url = chat_server(fail_first=10, fail_status=400)
    captioner = make_captioner(url, max_retries=3)
    with pytest.raises(CaptionError, match="HTTP 400.*busy"):
        captioner.caption([captioner.request("global", frames(1))])
    assert state.calls == 1


def test_an_image_limit_error_names_the_limit_and_the_setting(chat_server) -> None:
    message = "At most 2 image(s) may be provided in one prompt. (parameter=image)"  # vLLM 0.32's words
    body = {"error": {"message": message, "type": "BadRequestError", "code": 400}}
    state, url = chat_server(fail_first=1, fail_status=400, fail_body=body)
    captioner = make_captioner(url, max_retries=3)
    with pytest.raises(CaptionError) as err:
        captioner.caption([captioner.request("global", frames(3))])
    assert str(err.value) == (f"{url}/chat/completions: HTTP 400: {message} (this request has 3 images: set "
                              "prompts.visual.max_images to at most the server's per-prompt image limit, "
                              "vLLM's --limit-mm-per-prompt)")
    assert state.calls == 1


def test_timeout_is_retried_then_reported(chat_server) -> None:
    state, url = chat_server(delay_s=0.5)
    captioner = make_captioner(url, timeout_s=0.1, max_retries=1)
    with pytest.raises(CaptionError, match=r"timed out after 0.1s"):
        captioner.caption([captioner.request("global", frames(1))])
    assert state.calls == 2


def test_connection_refused_can_yield_empty_captions() -> None:
    captioner = make_captioner("http://127.0.0.1:9/v1", max_retries=1, on_error="empty")
    requests = [captioner.request("global", frames(1))] * 2
    assert captioner.caption(requests) == ["", ""]
    strict = make_captioner("http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(CaptionError, match="connection error"):
        strict.caption(requests)
