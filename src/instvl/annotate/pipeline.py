"""One decoded clip in, one InstVL row out: global caption and phrases, trajectories, instance captions.

Usable without Prefect:

    engines = Engines.build(cfg)
    decoded = decode_clip(spec, cfg.ingest, fetch_media(spec.uri), track_fps=cfg.trajectories.track_fps)
    sample = annotate_sample(decoded, engines, cfg)
"""

import logging
from dataclasses import dataclass

import numpy as np

from instvl.annotate.caption import CaptionRequest, InstanceInfo, caption_defects, parse_entities
from instvl.annotate.caption.base import Captioner
from instvl.annotate.config import AnnotateConfig
from instvl.annotate.detect.base import Detector
from instvl.annotate.phrases import unique_phrases
from instvl.annotate.track.base import Tracker
from instvl.annotate.trajectories import TrajectoryBuilder
from instvl.config import config_hash
from instvl.datasets.records import Instance, QCRecord, Sample
from instvl.media.clips import DecodedClip, stored_size
from instvl.qa.routing import route_row

log = logging.getLogger(__name__)


@dataclass
class Engines:
    """The built models of one pipeline config (load once per process; see `units.engines_for`)."""

    detector: Detector
    tracker: Tracker
    captioner: Captioner
    builder: TrajectoryBuilder

    @classmethod
    def build(cls, cfg: AnnotateConfig, captioner: Captioner | None = None) -> "Engines":
        """The models of `cfg`; `captioner` replaces the configured one (e.g. wrapped in a cache)."""
        detector, tracker = cfg.detector.build(), cfg.tracker.build()
        captioner = captioner or cfg.captioner.build()
        return cls(detector, tracker, captioner, cfg.trajectories.build(detector, tracker))


def annotate_sample(decoded: DecodedClip, engines: Engines, cfg: AnnotateConfig,
                    media: tuple[bytes, str] | None = None) -> Sample:
    """Annotate one clip or image; `media` is the (bytes, format) to embed in the row.

    Tracking runs on all of `decoded.frames` (dense with `trajectories.track_fps`); captions see, and
    trajectories keep, only the sampled ones (`decoded.stored`)."""
    frames = list(decoded.sampled_frames)
    caption, phrases = describe_scene(frames, engines.captioner, cfg)
    store = None if decoded.stored is None else decoded.stored.tolist()
    tracked = keep_best(engines.builder.build(list(decoded.frames), phrases, store=store),
                        cfg.filter.max_instances)
    instances = caption_instances(frames, tracked, engines.captioner, cfg, decoded.sampled_clip_frames)
    fields = decoded.spec.sample_fields()  # width, height: the source file's, what readers get unembedded
    if media is not None:  # the stored rendition's (`clips.stored_size`), not the annotation frames'
        fields["width"], fields["height"] = stored_size(decoded.spec, cfg.ingest)
    media_bytes, media_format = media if media is not None else (None, None)
    sample = Sample(**fields, global_caption=caption, instances=instances, media=media_bytes,
                    media_format=media_format, models=cfg.model_ids(),
                    config_hash=config_hash(cfg.rows_config()), split=cfg.out.split)
    sample.fit_masks(decoded.frames.shape[1:3])  # tracked on the annotation frames, stored at the row's size
    # The QC routing decision is recorded on every row (empty: publish without review).
    sample.qc = QCRecord(route_reasons=route_row(sample.to_row(), cfg.routing))
    return sample


def keep_best(tracked: list[Instance], limit: int) -> list[Instance]:
    """The `limit` highest-scoring instances, in order of first appearance, renumbered 0..K-1."""
    kept = sorted(sorted(tracked, key=lambda t: -t.score)[:limit], key=lambda t: t.instance_id)
    for new_id, instance in enumerate(kept):
        instance.instance_id = new_id
    return kept


def describe_scene(frames: list[np.ndarray], captioner: Captioner,
                   cfg: AnnotateConfig) -> tuple[str, list[str]]:
    """The global caption and the detector phrases (caption entities and/or the vocabulary)."""
    if cfg.phrases.source == "vocabulary":
        (caption,) = captioner.caption([captioner.request("global", frames)])
        return caption, cfg.phrases.phrases_for(None)
    (answer,) = captioner.caption([captioner.request("entities", frames)])
    caption, entities = parse_entities(answer)
    vocabulary = cfg.phrases.vocabulary if cfg.phrases.source == "both" else []
    found = cfg.phrases.from_entities(entities) or cfg.phrases.phrases_for(caption)
    return caption, unique_phrases([*vocabulary, *found])[: cfg.phrases.max_phrases]


def caption_instances(frames: list[np.ndarray], tracked: list[Instance], captioner: Captioner,
                      cfg: AnnotateConfig, clip_frames: np.ndarray) -> list[Instance]:
    """One caption per tracked instance (the VLM sees its boxes on the sampled frames); the captioned
    instances, renumbered, with trajectories in clip frames.

    `tracked` are the builder's instances, whose trajectories count sampled indices; `clip_frames[k]`
    is the clip frame of sampled frame k (`DecodedClip.clip_frames`). Instances whose caption fails the
    checks are dropped only with `filter.drop_bad_instance_captions`; otherwise QC routing flags them.
    """
    infos = [InstanceInfo.from_instance(inst, len(frames)) for inst in tracked]
    requests: list[CaptionRequest] = [
        captioner.request("instance", frames, instance=info, others=[o for o in infos if o is not info])
        for info in infos]
    captions = captioner.caption(requests) if requests else []
    instances: list[Instance] = []
    for inst, text in zip(tracked, captions, strict=True):
        if cfg.filter.drop_bad_instance_captions and caption_defects(text):
            continue
        instances.append(Instance(instance_id=len(instances), phrase=inst.phrase, caption=text or inst.phrase,
                                  trajectory=inst.trajectory.to_clip_frames(clip_frames), score=inst.score))
    return instances
