"""One InstVL-Synth sample from (config, index): scene, frames, ground-truth tracks, captions, media.

Every random choice of sample k comes from a generator seeded with (seed, k), so sample k never
depends on the other samples, on the unit it is written in, or on the number of samples.
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from instvl.datasets.records import Instance, Sample, Trajectory
from instvl.datasets.synth.captions import global_caption, instance_caption
from instvl.datasets.synth.config import SynthConfig, span
from instvl.datasets.synth.media import encode_jpeg, encode_mp4
from instvl.datasets.synth.render import PHOTOS, PLAIN, Rendered, Track, background_image, render, tracks
from instvl.datasets.synth.scene import Difficulty, Scene, sample_scene

GENERATOR = "instvl-synth"
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)
"""Synthetic samples carry a fixed creation time, so the same seed writes identical rows."""


@dataclass(slots=True)
class DrawnScene:
    """A sample before encoding: its scene, rendered frames, tracks per object and split."""

    index: int
    split: str
    scene: Scene
    rendered: Rendered
    tracks: list[Track]

    @property
    def visible(self) -> list[int]:
        """Objects seen in at least one frame; they become instances 0..K-1 in this order."""
        return [k for k, track in enumerate(self.tracks) if track.frame_index]


def sample_id(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:07d}"


def draw_scene(cfg: SynthConfig, index: int) -> DrawnScene:
    """Sample and render scene `index` of the benchmark described by `cfg`."""
    rng = np.random.default_rng([cfg.seed, index])
    split = _split(float(rng.random()), cfg)
    is_image = bool(rng.random() < cfg.image_fraction)
    width, height = _even(rng, span(cfg.width)), _even(rng, span(cfg.height))
    num_frames = 1 if is_image else int(rng.integers(span(cfg.num_frames)[0], span(cfg.num_frames)[1] + 1))
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    photo_names = tuple(PHOTOS)
    background = photo_names[rng.integers(len(photo_names))] if cfg.backgrounds == "skimage" else PLAIN
    pixels = background_image(rng, background, width, height)
    hard = Difficulty(cfg.occlusion, cfg.confuser_fraction, cfg.same_colour_confusers, cfg.entering_fraction,
                      cfg.speed_scale, confuser_attributes=cfg.confuser_attributes,
                      family_motion=cfg.family_motion)
    scene = sample_scene(rng, width, height, num_frames, num_objects, background, hard)
    rendered = render(scene, pixels)
    return DrawnScene(index, split, scene, rendered, tracks(rendered.labels, len(scene.objects), cfg.masks))


def _split(u: float, cfg: SynthConfig) -> str:
    if u < cfg.val_fraction:
        return "val"
    return "test" if u < cfg.val_fraction + cfg.test_fraction else "train"


def _even(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    value = int(rng.integers(bounds[0], bounds[1] + 1))
    return max(bounds[0] - bounds[0] % 2, value - value % 2)


def to_sample(cfg: SynthConfig, drawn: DrawnScene) -> Sample:
    """Encode the frames and assemble the InstVL row."""
    scene, video = drawn.scene, drawn.scene.num_frames > 1
    if video:
        media, fmt = encode_mp4(drawn.rendered.frames, cfg.fps, cfg.video_crf), "mp4"
    else:
        media, fmt = encode_jpeg(drawn.rendered.frames[0], cfg.jpeg_quality), "jpeg"
    sid = sample_id(cfg.seed, drawn.index)
    instances = [_instance(new_id, scene, drawn.tracks, k, cfg.caption_background)
                 for new_id, k in enumerate(drawn.visible)]
    return Sample(
        sample_id=sid, media_type="video" if video else "image", width=scene.width, height=scene.height,
        num_frames=scene.num_frames, fps=float(cfg.fps) if video else None,
        global_caption=global_caption(scene, drawn.visible), instances=instances,
        media=media, media_format=fmt, uri=f"synth://seed-{cfg.seed}/{sid}.{'mp4' if video else 'jpg'}",
        sha256=hashlib.sha256(media).hexdigest(),
        clip_start_s=0.0 if video else None, clip_end_s=scene.num_frames / cfg.fps if video else None,
        models={"generator": GENERATOR}, config_hash=cfg.dataset_hash(), created_at=CREATED_AT,
        split=drawn.split,
    )


def _instance(instance_id: int, scene: Scene, all_tracks: list[Track], k: int, background: bool) -> Instance:
    track = all_tracks[k]
    trajectory = Trajectory(frame_index=list(track.frame_index), box=track.boxes.tolist(),
                            score=[1.0] * len(track.frame_index), mask_rle=list(track.mask_rle))
    return Instance(instance_id=instance_id, phrase=scene.objects[k].shape,
                    caption=instance_caption(scene, all_tracks, k, background), trajectory=trajectory,
                    score=1.0)


def generate_sample(cfg: SynthConfig, index: int) -> Sample:
    """Sample `index` of the benchmark, as an InstVL record with its media embedded."""
    return to_sample(cfg, draw_scene(cfg, index))
