"""The `openai` captioner against vLLM's real OpenAI-compatible server on 127.0.0.1 (CPU, tiny random
Qwen2-VL): requests in flight together, a server restart survived by retries, and the server's image
limit (`--limit-mm-per-prompt`) surfacing as a clear error."""

import logging
import re
import threading
import urllib.request

import pytest

from instvl.annotate.caption import CaptionError, InstanceInfo, OpenAICaptioner, render_request
from instvl.testing.media import noise_frames

pytestmark = pytest.mark.vllm


def make_captioner(server, **options) -> OpenAICaptioner:
    settings = {"base_url": server.base_url, "model": "tiny-qwen2-vl", "api_key_env": None, "max_tokens": 8,
                "seed": 0, "timeout_s": 120.0, "prompts": {"visual": {"max_images": server.max_images,
                                                                       "max_side": 160}}}
    return OpenAICaptioner.Config(**settings | options).build()


def requests_for(captioner: OpenAICaptioner, count: int) -> list:
    cup = InstanceInfo(1, "cup", [(0.1, 0.1, 0.5, 0.6), (0.2, 0.1, 0.6, 0.6)])
    kinds = ["global", "entities", "instance"]
    return [captioner.request(kinds[i % 3], noise_frames(2, 64 + 8 * i, 48, seed=i),
                              cup if kinds[i % 3] == "instance" else None) for i in range(count)]


def prompt_tokens_total(server) -> float:
    """vLLM's own count of prompt tokens processed so far (its Prometheus metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:prompt_tokens_total\{[^}]*\} (\S+)$", text, re.M))


class InFlight:
    """Counts the HTTP calls a captioner has open at once."""

    def __init__(self, captioner: OpenAICaptioner) -> None:
        self.now = self.peak = self.done = 0
        self.lock = threading.Lock()
        post = captioner._post_once

        def counted(body):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                return post(body)
            finally:
                with self.lock:
                    self.now -= 1
                    self.done += 1

        captioner._post_once = counted  # type: ignore[method-assign]


def test_concurrent_requests_with_images_are_all_answered(vllm_server):
    captioner = make_captioner(vllm_server, concurrency=4)
    requests = requests_for(captioner, 8)
    in_flight = InFlight(captioner)
    before = prompt_tokens_total(vllm_server)
    texts = captioner.caption(requests)
    assert len(texts) == 8 and all(isinstance(t, str) for t in texts) and any(texts)
    assert in_flight.peak == 4 and in_flight.done == 8
    # The images reached the model: each adds its vision tokens (at least 4, for 56x56) to the prompt.
    images = sum(len(render_request(r)) for r in requests)
    words = sum(len(r.prompt.split()) for r in requests)
    assert prompt_tokens_total(vllm_server) - before >= 4 * images + words


def test_a_request_over_the_servers_image_limit_fails_naming_the_limit(vllm_server):
    captioner = make_captioner(vllm_server, prompts={"visual": {"max_images": 3, "max_side": 160}})
    request = captioner.request("global", noise_frames(3, 64, 48))
    with pytest.raises(CaptionError, match=r"HTTP 400: At most 2 image\(s\) may be provided in one prompt"
                       r".*this request has 3 images: set prompts.visual.max_images .*--limit-mm-per-prompt"):
        captioner.caption([request])
    assert captioner.caption(requests_for(captioner, 1))  # within the limit, the same server answers


def test_a_server_restart_mid_batch_is_retried_and_loses_nothing(vllm_server, caplog):
    captioner = make_captioner(vllm_server, concurrency=2, max_retries=200, backoff_s=0.5, max_backoff_s=2.0)
    requests = requests_for(captioner, 8)
    reference = captioner.caption(requests)
    stopped, restart_errors = threading.Event(), []
    complete = captioner.complete

    def start_again() -> None:
        try:
            vllm_server.start()
        except BaseException as err:  # pytest's failure/skip outcomes too: reported below
            restart_errors.append(err)

    def complete_then_stop(body):
        text = complete(body)
        if not stopped.is_set():  # after the first answer: down now, up again in the background
            stopped.set()
            vllm_server.stop()
            threading.Thread(target=start_again, daemon=True).start()
        return text

    captioner.complete = complete_then_stop  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="instvl.annotate.caption.openai"):
        texts = captioner.caption(requests)
    assert not restart_errors and vllm_server.starts == 2
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert len(texts) == len(reference) == 8
    assert texts == reference  # greedy answers from the same weights: the restart changed nothing


def test_a_video_request_is_answered_with_its_frames_as_one_video(vllm_server):
    """A global request with video input: one `data:video/jpeg` URL of its frames, which the server decodes
    frame by frame (no video codec); its vision tokens count once per two frames (temporal merging)."""
    captioner = make_captioner(vllm_server, prompts={"visual": {"max_images": vllm_server.max_images,
                                                                "max_side": 112, "video": True}})
    request = captioner.request("global", noise_frames(6, 112, 112, seed=3))
    assert len(render_request(request)) == 6 > vllm_server.max_images  # over the image limit, as images
    before = prompt_tokens_total(vllm_server)
    (text,) = captioner.caption([request])
    assert isinstance(text, str)
    # 6 frames of 112x112 px: 3 temporal patches x 16 tokens, plus the prompt's words.
    assert prompt_tokens_total(vllm_server) - before >= 3 * 16 + len(request.prompt.split())
