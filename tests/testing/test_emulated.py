"""The emulated GPU backends: images counted as the visual prompt renders them (boxes, prefix, video), a
prefix cache that prefills a clip's shared images once, requests sent together sharing a step, models
on one shared GPU taking turns, and a data-parallel server spreading requests over its engines."""

import json
import threading
import urllib.request

from instvl.annotate.caption.base import make_request
from instvl.annotate.caption.prompting import PromptConfig
from instvl.annotate.caption.request import InstanceInfo, VisualPromptConfig
from instvl.annotate.caption.visual_prompt import render_request
from instvl.testing.emulated import (
    ContinuousBatching,
    EmulatedDevice,
    SharedGpu,
    request_images,
    request_prefix,
    serve_openai,
    video_frames,
)
from instvl.testing.media import moving_square


def run_together(calls, timeout_s: float = 30) -> None:
    """Run each call in a thread of its own, all at once, and wait for them."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)


def requests(visual: VisualPromptConfig, seed: int = 0):
    frames, boxes = moving_square(12, 64, 48, seed=seed)
    box = [float(v) for v in boxes[0] / [64, 48, 64, 48]]
    info = InstanceInfo(0, "square", [box if t % 3 else None for t in range(12)])  # visible on 8 of 12
    prompts = PromptConfig(visual=visual)
    return (make_request("entities", frames, prompts),
            make_request("instance", frames, prompts, instance=info))


def test_images_are_counted_as_the_visual_prompt_renders_them():
    for visual in (VisualPromptConfig(max_images=6), VisualPromptConfig(mode="prefix", max_images=6,
                                                                        marked_frames=2)):
        for request in requests(visual):
            assert request_images(request) == len(render_request(request)), (visual.mode, request.kind)
    entities, instance = requests(VisualPromptConfig(video=True, max_video_frames=9))
    assert len(render_request(entities)) == 9 and request_images(entities) == 5  # 2 frames per patch
    assert request_images(instance) == len(render_request(instance))  # instance requests keep images


def test_prefix_requests_of_a_clip_share_a_key_and_other_clips_do_not():
    visual = VisualPromptConfig(mode="prefix", max_images=6, marked_frames=1)
    entities, instance = requests(visual)
    other, _ = requests(visual, seed=1)
    assert request_prefix(entities) == request_prefix(instance) == (request_prefix(entities)[0], 5)
    assert request_prefix(other)[0] != request_prefix(entities)[0]
    assert request_prefix(requests(VisualPromptConfig())[1]) is None  # boxes mode: nothing shared


def test_a_cached_prefix_is_prefilled_once():
    engine = ContinuousBatching(prefill_per_image_s=1.0, step_s=0.0, per_seq_s=0.0, time_scale=0.0)
    try:
        engine.generate([(6, 8)], [(42, 5)])
        engine.generate([(6, 8)], [(42, 5)])  # same clip: only its marked image is new
        engine.generate([(6, 8)], [(7, 5)])  # another clip
        engine.generate([(6, 8)])  # no prefix
    finally:
        engine.close()
    assert [seconds for _, _, admitted, seconds in engine.trace if admitted] == [6.0, 1.0, 6.0, 6.0]


def test_requests_sent_together_share_the_first_step():
    engine = ContinuousBatching(time_scale=0.0, gather_s=0.2)
    try:
        run_together([lambda: engine.generate([(1, 8)])] * 5)
    finally:
        engine.close()
    assert engine.trace[0][1:3] == (5, 5) and engine.steps == 1


def test_video_frames_of_a_frame_list_url():
    assert video_frames("data:video/jpeg;base64,AAA,BBB,CCC") == 3


def test_models_on_one_shared_gpu_take_turns_and_the_gpu_counts_their_union():
    gpu = SharedGpu()
    detect, track = EmulatedDevice("detect", gpu=gpu), EmulatedDevice("track", gpu=gpu)
    engine = ContinuousBatching(step_s=0.0, per_seq_s=0.0, prefill_per_image_s=0.1, tokens_per_step=1,
                                gather_s=0.0, gpu=gpu)
    try:
        run_together([lambda: detect.run(0.1, 1), lambda: track.run(0.1, 1),
                      lambda: engine.generate([(1, 1)])])
    finally:
        engine.close()
    starts = sorted([detect.trace[0][0], track.trace[0][0], engine.trace[0][0]])
    assert all(b - a >= 0.1 for a, b in zip(starts, starts[1:], strict=False))  # one after another
    assert gpu.stats.calls == 3 and gpu.stats.busy_s >= 0.3 and detect.stats.calls == track.stats.calls == 1


def test_a_data_parallel_server_sends_each_request_to_the_least_loaded_engine():
    # one step per request (0.5 s): requests sent together are all running when the next one is routed
    engines = [ContinuousBatching(step_s=0.0005, per_seq_s=0.0, prefill_per_image_s=0.0, tokens_per_step=1000,
                                  gather_s=0.0) for _ in range(2)]
    server = serve_openai(engines)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe ID: 1."}]}]}).encode()
    answers: list[str] = []

    def post() -> None:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(json.load(response)["choices"][0]["message"]["content"])

    try:
        run_together([post] * 8)
    finally:
        server.shutdown()
        for engine in engines:
            engine.close()
    admitted = [sum(a for _, _, a, _ in engine.trace) for engine in engines]
    assert len(answers) == 8 and sum(admitted) == 8
    assert min(admitted) >= 3, admitted  # one engine alone would take all 8
