"""SAM2 video tracking through transformers (`Sam2VideoModel`), without the video processor.

`Sam2VideoProcessor` needs torchvision; the model itself does not, so frames are resized and normalised
here and the inference session is fed directly. Frames and prompts are prepared as SAM2's own video
predictor prepares them (PIL bicubic resize of the uint8 frames, where transformers' video processor
resizes bilinearly; box and mask prompts as its `add_new_points_or_box` and `add_new_mask` place them);
tests/annotate/test_track_hf.py checks this against the `sam2` package's code.

All seeds are added on the window's first frame (a seed's mask where it has one, else its box) and
propagated together; an object is lost on a frame where its mask is empty (SAM2 blanks the mask when its
object-presence logit is negative). An object's score is 2 * sigmoid(presence logit) - 1, floored at 0:
0 where SAM2 is undecided whether the object is there, near 1 where it is sure.
"""

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from instvl.annotate.detect.base import IMAGENET_MEAN, IMAGENET_STD
from instvl.annotate.track.base import mask_to_box, start_tracking
from instvl.annotate.tracks import TrackedFrame, TrackedObject, TrackSeed
from instvl.annotate.weights import weights_error
from instvl.config import BaseConfig
from instvl.deps import require

log = logging.getLogger(__name__)


class HFTracker:
    """Box-prompted video segmentation and tracking with a transformers SAM2 video model."""

    class Config(BaseConfig):
        kind: Literal["hf"] = "hf"
        model: str = "facebook/sam2.1-hiera-tiny"
        """Hub id or local directory of a SAM2 video checkpoint (ignored with `tiny_random`)."""
        revision: str | None = None
        """Hub branch, tag or commit of `model` (None: the default branch); recorded in provenance."""
        tiny_random: bool = False
        """Build a tiny randomly initialised model from a config (offline tests and CPU demos)."""
        tiny_image_size: int = 128
        seed: int = 0
        keep_masks: bool = True
        """Return per-frame masks at frame resolution (needed for mask IoU and RLE output)."""
        device: str = "cpu"
        dtype: Literal["float32", "bfloat16", "float16"] = "float32"

        def build(self) -> "HFTracker":
            return HFTracker(self)

    def __init__(self, config: Config):
        self.config = config
        self._torch = require("torch", "annotate")
        self._transformers = require("transformers", "annotate")
        self.model = _load_model(config, self._transformers).to(config.device, self._dtype).eval()
        self.image_size = int(self.model.config.image_size)

    @property
    def _dtype(self):
        return getattr(self._torch, self.config.dtype)

    @property
    def model_id(self) -> str:
        return "tiny-random-sam2-video" if self.config.tiny_random else self.config.model

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        video, out = start_tracking(frames, seeds)
        if not seeds:
            return out
        session = self._new_session(video)
        self._add_prompts(session, seeds, video.shape[1], video.shape[2])
        torch = self._torch
        with torch.inference_mode():
            self.model(inference_session=session, frame_idx=0)
            for step in self.model.propagate_in_video_iterator(
                    inference_session=session, start_frame_idx=0, max_frame_num_to_track=len(video)):
                out[step.frame_idx].objects = self._objects(step, video.shape[1], video.shape[2])
        return out

    def _new_session(self, video: np.ndarray):
        """Frames as SAM2's own video loader (`sam2.utils.misc.load_video_frames`) prepares them: each
        uint8 frame resized to a square with PIL's bicubic filter, then scaled to [0, 1] and normalised
        with the ImageNet mean and std."""
        from PIL import Image

        torch = self._torch
        size = self.image_size
        resized = np.stack([np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
                            for frame in video])
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        session_cls = self._transformers.Sam2VideoInferenceSession
        device = self.config.device
        return session_cls(video=x, video_height=video.shape[1], video_width=video.shape[2],
                           inference_device=device, inference_state_device=device,
                           video_storage_device=device, dtype=self._dtype)

    def _add_prompts(self, session, seeds: Sequence[TrackSeed], height: int, width: int) -> None:
        """All on frame 0, as `Sam2VideoProcessor.add_inputs_to_inference_session` would add them: a seed's
        mask where it has one (resized to the model's input, kept where >= 0.5), else its box as a SAM2
        point pair (labels 2, 3) in model-input pixels."""
        torch = self._torch
        import torch.nn.functional as functional

        for seed in seeds:
            obj_idx = session.obj_id_to_idx(seed.obj_id)
            if seed.mask is not None and seed.mask.shape == (height, width) and seed.mask.any():
                mask = torch.from_numpy(np.ascontiguousarray(seed.mask)).float()[None, None]
                mask = functional.interpolate(mask, size=(self.image_size, self.image_size), mode="bilinear",
                                              align_corners=False, antialias=True)
                session.add_mask_inputs(obj_idx, 0, (mask >= 0.5).float())
                session.remove_point_inputs(obj_idx, 0)
                continue
            coords = torch.tensor(seed.box_xyxy, dtype=torch.float32).view(1, 1, 2, 2) * self.image_size
            labels = torch.tensor([[[2, 3]]], dtype=torch.int32)
            session.add_point_inputs(obj_idx, 0, {"point_coords": coords, "point_labels": labels})
            session.remove_mask_inputs(obj_idx, 0)
        session.obj_with_new_inputs = [s.obj_id for s in seeds]

    def _objects(self, step, height: int, width: int) -> dict[int, TrackedObject]:
        import torch.nn.functional as functional

        logits = functional.interpolate(step.pred_masks.float(), size=(height, width), mode="bilinear",
                                        align_corners=False)[:, 0]
        masks = (logits > 0).cpu().numpy()
        if step.object_score_logits is not None:
            presence = step.object_score_logits.float().sigmoid().reshape(len(masks), -1)[:, 0]
            scores = (2 * presence - 1).clamp(min=0).cpu().numpy()
        else:
            scores = np.ones(len(masks), np.float32)
        objects = {}
        for obj_id, mask, score in zip(step.object_ids, masks, scores, strict=True):
            box = mask_to_box(mask)
            objects[int(obj_id)] = TrackedObject(int(obj_id), box, float(score) if box else 0.0,
                                                 mask if self.config.keep_masks else None)
        return objects


def _load_model(config: HFTracker.Config, transformers):
    if not config.tiny_random:
        with weights_error("tracker", config.model):
            return transformers.Sam2VideoModel.from_pretrained(config.model, revision=config.revision)
    require("torch", "annotate").manual_seed(config.seed)
    model = transformers.Sam2VideoModel(tiny_config(config.tiny_image_size))
    log.info("built a tiny random SAM2 video model (%d parameters)",
             sum(p.numel() for p in model.parameters()))
    return model


def tiny_config(size: int = 128):
    """A Sam2VideoConfig small enough for CPU tests.

    Constraints (transformers 5.x): the memory encoder's output stays 64 channels, hidden sizes are a
    multiple of 64 above 64 and equal across prompt encoder, mask decoder and memory, and the Hiera
    stages keep [1, 2, 7, 2] blocks.
    """
    t = require("transformers", "annotate")
    if size % 16:
        raise ValueError(f"tiny SAM2 image size must be a multiple of 16, got {size}")
    backbone = t.Sam2HieraDetConfig(hidden_size=12, image_size=[size, size], blocks_per_stage=[1, 2, 7, 2],
                                    embed_dim_per_stage=[12, 24, 48, 96],
                                    num_attention_heads_per_stage=[1, 2, 4, 8])
    vision = t.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                                backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
                                fpn_hidden_size=128)
    return t.Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=t.Sam2VideoPromptEncoderConfig(hidden_size=128, image_size=size,
                                                             mask_input_channels=8),
        mask_decoder_config=t.Sam2VideoMaskDecoderConfig(hidden_size=128, mlp_dim=64, num_attention_heads=4,
                                                         iou_head_hidden_dim=32),
        image_size=size, memory_attention_hidden_size=128, memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[size // 16, size // 16])
