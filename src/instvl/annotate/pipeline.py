"""One decoded clip in, one InstVL row out: global caption and phrases, trajectories, instance captions.

Usable without Prefect:

    engines = Engines.build(cfg)
    decoded = decode_clip(spec, cfg.ingest)
    sample = annotate_sample(decoded, engines, cfg)
"""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from instvl.annotate.caption import CaptionRequest, InstanceInfo, caption_problems, parse_entities
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.trajectories import TrajectoryBuilder
from instvl.annotate.types import Track
from instvl.config import config_hash
from instvl.datasets.clips import DecodedClip
from instvl.datasets.records import Instance, QCRecord, Sample
from instvl.qa.routing import route_row

log = logging.getLogger(__name__)


@dataclass
class Engines:
    """The built models of one pipeline config (load once per process; see `engine_cache`)."""

    detector: Any
    tracker: Any
    captioner: Any
    builder: TrajectoryBuilder

    @classmethod
    def build(cls, cfg: AnnotateConfig, captioner: Any = None) -> "Engines":
        detector, tracker = cfg.detector.build(), cfg.tracker.build()
        captioner = captioner or cfg.captioner.build()
        return cls(detector, tracker, captioner, cfg.trajectories.build(detector, tracker))


def annotate_sample(decoded: DecodedClip, engines: Engines, cfg: AnnotateConfig,
                    media: tuple[bytes, str] | None = None) -> Sample:
    """Annotate one clip or image; `media` is the (bytes, format) to embed in the row."""
    frames = list(decoded.frames)
    caption, phrases = describe_scene(frames, engines.captioner, cfg)
    tracks = engines.builder.build(frames, phrases)
    tracks = keep_best(tracks, cfg.filter.max_instances)
    instances = caption_instances(frames, tracks, engines.captioner, cfg, decoded.clip_frame_indices)
    height, width = decoded.frames.shape[1:3]
    fields = decoded.spec.sample_fields()
    fields.update(width=int(width) // 2 * 2 if decoded.spec.media_type == "video" else int(width),
                  height=int(height) // 2 * 2 if decoded.spec.media_type == "video" else int(height))
    media_bytes, media_format = media if media is not None else (None, None)
    sample = Sample(**fields, global_caption=caption, instances=instances, media=media_bytes,
                    media_format=media_format, models=cfg.model_ids(), config_hash=config_hash(cfg),
                    split=cfg.out.split)
    # The QC routing decision is recorded on every row (empty: publish without review).
    sample.qc = QCRecord(route_reasons=route_row(sample.to_row(), cfg.routing))
    return sample


def keep_best(tracks: list[Track], limit: int) -> list[Track]:
    """The `limit` highest-scoring tracks, in order of first appearance, renumbered 0..K-1."""
    kept = sorted(sorted(tracks, key=lambda t: -t.mean_score)[:limit], key=lambda t: t.track_id)
    for new_id, track in enumerate(kept):
        track.track_id = new_id
    return kept


def describe_scene(frames: list[np.ndarray], captioner: Any, cfg: AnnotateConfig) -> tuple[str, list[str]]:
    """The global caption and the detector phrases (caption entities and/or the vocabulary)."""
    if cfg.phrases.source == "vocabulary":
        (caption,) = captioner.caption([captioner.request("global", frames)])
        return caption, cfg.phrases.phrases_for(None)
    (answer,) = captioner.caption([captioner.request("entities", frames)])
    caption, entities = parse_entities(answer)
    vocabulary = cfg.phrases.vocabulary if cfg.phrases.source == "both" else []
    found = entities or cfg.phrases.phrases_for(caption)
    return caption, unique_phrases([*vocabulary, *found])[: cfg.phrases.max_phrases]


def caption_instances(frames: list[np.ndarray], tracks: list[Track], captioner: Any, cfg: AnnotateConfig,
                      clip_index: np.ndarray) -> list[Instance]:
    """One caption per trajectory (the VLM sees the instance's boxes on the sampled frames).

    Track frame indices count sampled frames; rows store indices into the clip, so they are mapped
    through `clip_index`. Instances whose caption fails the checks are dropped only with
    `filter.drop_bad_instance_captions`; otherwise QC routing flags them.
    """
    sampled = range(len(frames))
    infos = [InstanceInfo.from_track(t.track_id, t.phrase, t.frame_index, t.boxes, sampled) for t in tracks]
    requests: list[CaptionRequest] = [
        captioner.request("instance", frames, instance=info, others=[o for o in infos if o is not info])
        for info in infos]
    captions = captioner.caption(requests) if requests else []
    instances = []
    for track, text in zip(tracks, captions, strict=True):
        if cfg.filter.drop_bad_instance_captions and caption_problems(text):
            continue
        instance = track.to_instance(text or track.phrase)
        instance.instance_id = len(instances)
        instance.trajectory.frame_index = [int(clip_index[i]) for i in track.frame_index]
        instances.append(instance)
    return instances
