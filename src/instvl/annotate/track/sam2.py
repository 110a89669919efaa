"""SAM2 video tracking through the sam2 package's video predictor (`build_sam2_video_predictor`).

The predictor reads a video from a folder of `<index>.jpg` frames, so each window is written to a
temporary folder, prompted on its first frame (a seed's mask where it has one, else its box) and
propagated. An object's score is 2 * sigmoid(object-presence logit) - 1, floored at 0: 0 where SAM2 is
undecided whether the object is there at all, near 1 where it is sure. Install with
`pip install 'instvl[sam2]'` (see the notes there: build it with `--no-build-isolation`).
"""

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from instvl.annotate.track.base import mask_to_box, start_tracking
from instvl.annotate.tracks import TrackedFrame, TrackedObject, TrackSeed
from instvl.annotate.weights import WeightsError
from instvl.config import BaseConfig
from instvl.deps import require

log = logging.getLogger(__name__)

EXTRA = "sam2"


class SAM2Tracker:
    """Box-prompted video segmentation and tracking with the reference SAM2 implementation."""

    class Config(BaseConfig):
        kind: Literal["sam2"] = "sam2"
        config_file: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
        """Config name inside the sam2 package (e.g. configs/sam2.1/sam2.1_hiera_l.yaml)."""
        checkpoint: Path | None = None
        """Checkpoint file (.pt), e.g. sam2.1_hiera_large.pt; None builds random weights, which the
        annotate config allows only with `random_init: true` (tests)."""
        keep_masks: bool = True
        device: str = "cpu"
        jpeg_quality: int = 95
        offload_video_to_cpu: bool = True

        def build(self) -> "SAM2Tracker":
            return SAM2Tracker(self)

    def __init__(self, config: Config):
        self.config = config
        self._torch = require("torch", EXTRA)
        build_sam = require("sam2.build_sam", EXTRA)
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise WeightsError(f"tracker (sam2): checkpoint {str(config.checkpoint)!r} does not exist; "
                               "download it (see the sam2 README) and pass "
                               "--set tracker.checkpoint=/path/to/it.pt")
        ckpt = str(config.checkpoint) if config.checkpoint else None
        self.predictor = build_sam.build_sam2_video_predictor(config.config_file, ckpt_path=ckpt,
                                                              device=config.device)

    @property
    def model_id(self) -> str:
        return Path(self.config.checkpoint).name if self.config.checkpoint else self.config.config_file

    def track(self, frames: np.ndarray | Sequence[np.ndarray],
              seeds: Sequence[TrackSeed]) -> list[TrackedFrame]:
        video, out = start_tracking(frames, seeds)
        if not seeds:
            return out
        height, width = video.shape[1:3]
        with tempfile.TemporaryDirectory(prefix="instvl-sam2-") as folder, self._torch.inference_mode():
            write_jpeg_folder(video, Path(folder), self.config.jpeg_quality)
            state = self.predictor.init_state(video_path=folder,
                                              offload_video_to_cpu=self.config.offload_video_to_cpu)
            for seed in seeds:
                if seed.mask is not None and seed.mask.shape == (height, width) and seed.mask.any():
                    self.predictor.add_new_mask(inference_state=state, frame_idx=0, obj_id=seed.obj_id,
                                                mask=seed.mask)
                else:
                    box = seed_box_pixels(seed, width, height)
                    self.predictor.add_new_points_or_box(inference_state=state, frame_idx=0,
                                                         obj_id=seed.obj_id, box=box)
            steps = ((frame_idx, obj_ids, logits, presence_logits(state, obj_ids, frame_idx))
                     for frame_idx, obj_ids, logits in self.predictor.propagate_in_video(state))
            for local_index, objects in decode_propagation(steps, self.config.keep_masks):
                out[local_index].objects = objects
        return out


def seed_box_pixels(seed: TrackSeed, width: int, height: int) -> np.ndarray:
    """The seed's box in pixel coordinates of the frame, as the predictor expects it."""
    return np.asarray(seed.box_xyxy, dtype=np.float32) * np.array([width, height, width, height], np.float32)


def write_jpeg_folder(video: np.ndarray, folder: Path, quality: int = 95) -> list[Path]:
    """Write frames as `<index>.jpg` (0-based), the layout the predictor's `init_state` reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(video):
        path = folder / f"{i}.jpg"
        Image.fromarray(frame).save(path, quality=quality)
        paths.append(path)
    return paths


def presence_logits(state: dict, obj_ids: Sequence[int], frame_idx: int) -> list[float | None]:
    """Each object's object-presence logit on `frame_idx` from the predictor's inference state (None
    where the state holds none)."""
    found: list[float | None] = []
    for obj_id in obj_ids:
        outputs = state["output_dict_per_obj"].get(state["obj_id_to_idx"].get(obj_id), {})
        out = outputs.get("cond_frame_outputs", {}).get(frame_idx) or \
            outputs.get("non_cond_frame_outputs", {}).get(frame_idx)
        logit = out.get("object_score_logits") if out else None
        found.append(float(logit.float().reshape(-1)[0]) if logit is not None else None)
    return found


def decode_propagation(steps: Iterator[tuple], keep_masks: bool = True
                       ) -> Iterator[tuple[int, dict[int, TrackedObject]]]:
    """Per-frame objects from (frame_idx, obj_ids, mask_logits (N, 1, H, W)[, presence logits]) steps.

    A mask is the positive logits. Its score is 2 * sigmoid(presence logit) - 1 floored at 0 where the
    logit is known, else 2 * (mean foreground probability inside the mask) - 1; 0 when the mask is empty.
    """
    for frame_idx, obj_ids, logits, *rest in steps:
        presence = rest[0] if rest else [None] * len(obj_ids)
        logits = logits.float().cpu().numpy() if hasattr(logits, "cpu") else np.asarray(logits, np.float32)
        objects = {}
        for obj_id, obj_logits, present in zip(obj_ids, logits.reshape(len(obj_ids), *logits.shape[-2:]),
                                               presence, strict=True):
            mask = obj_logits > 0
            box = mask_to_box(mask)
            probability = 1 / (1 + np.exp(-present)) if present is not None else \
                float(np.mean(1 / (1 + np.exp(-obj_logits[mask])))) if box else 0.0
            score = max(0.0, 2 * float(probability) - 1) if box else 0.0
            objects[int(obj_id)] = TrackedObject(int(obj_id), box, score, mask if keep_masks else None)
        yield int(frame_idx), objects
