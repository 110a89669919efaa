"""The Detector protocol and what every detector backend shares: frame checks, NMS, query decoding."""

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from instvl.annotate.tracks import Detection
from instvl.config import BaseConfig
from instvl.geometry import as_box, box_iou, clip_boxes, cxcywh_to_xyxy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GroundingDinoBaseConfig(BaseConfig):
    """Thresholds, suppression and batching shared by the GroundingDINO backends."""

    box_threshold: float = 0.35
    text_threshold: float = 0.25
    class_iou: float = 0.5
    """IoU above which boxes of the same phrase are merged."""
    cross_iou: float = 0.8
    """IoU above which boxes of different phrases are merged (the best-scoring phrase wins)."""
    max_detections: int = 50
    batch_size: int = 4
    min_side: int = 800
    max_side: int = 1333
    device: str = "cpu"


@runtime_checkable
class Detector(Protocol):
    """Open-vocabulary detector: for each frame, the boxes of the given phrases.

    `frames` are RGB uint8 arrays (H, W, 3).
    """

    def detect(self, frames: Sequence[np.ndarray], phrases: Sequence[str]) -> list[list[Detection]]: ...


@runtime_checkable
class MixedDetector(Detector, Protocol):
    """A detector that takes one phrase list per frame in one call: GroundingDINO encodes the prompt per
    image, so keyframes of clips with different phrases share a batch (`annotate.engine`). The answer for
    a frame is the one `detect([frame], phrases)` gives."""

    def detect_many(self, frames: Sequence[np.ndarray],
                    phrase_lists: Sequence[Sequence[str]]) -> list[list[Detection]]: ...


def prompt_jobs(phrase_lists: Sequence[Sequence[str]],
                split: Callable[[Sequence[str]], list[list[str]]]) -> list[tuple[int, list[str]]]:
    """(frame index, phrase group) for every prompt a batch must run: `split(phrases)` cuts one frame's
    phrases into prompts the text encoder fits. Ordered group by group (all frames' first prompt, then
    their second...), so that frames sharing one phrase list batch as a plain `detect` call does."""
    groups = [split(phrases) for phrases in phrase_lists]
    return [(i, frame_groups[g]) for g in range(max(map(len, groups), default=0))
            for i, frame_groups in enumerate(groups) if g < len(frame_groups)]


def merge_found(found: Sequence[Sequence[Detection]],
                settings: GroundingDinoBaseConfig) -> list[list[Detection]]:
    """One frame's detections over all its prompts, best first, duplicates suppressed."""
    c = settings
    return [suppress_duplicates(sorted(f, key=lambda d: -d.score), c.class_iou, c.cross_iou, c.max_detections)
            for f in found]


def check_frames(frames: Sequence[np.ndarray]) -> None:
    """Raise a clear error unless every frame is an (H, W, 3) uint8 array."""
    for i, frame in enumerate(frames):
        rgb = isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
        if not rgb or frame.dtype != np.uint8:
            desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {i}: expected an RGB uint8 array of shape (H, W, 3), got {desc}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(boxes[best:best + 1], boxes[order])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def suppress_duplicates(detections: Sequence[Detection], class_iou: float = 0.5, cross_iou: float = 0.8,
                        max_detections: int | None = None) -> list[Detection]:
    """Class-aware NMS at `class_iou`, then cross-phrase NMS at `cross_iou` (one box, one phrase).

    The second pass removes the same object found under two phrases ('dog' and 'puppy'); its higher
    threshold keeps genuinely overlapping objects of different classes.
    """
    kept = []
    for phrase in dict.fromkeys(d.phrase for d in detections):
        group = [d for d in detections if d.phrase == phrase]
        kept += [group[i] for i in _nms_detections(group, class_iou)]
    kept = [kept[i] for i in _nms_detections(kept, cross_iou)]
    return kept[:max_detections] if max_detections else kept


def _nms_detections(detections: Sequence[Detection], iou_threshold: float) -> np.ndarray:
    if not detections:
        return np.zeros(0, dtype=np.int64)
    boxes = np.array([d.box_xyxy for d in detections])
    return nms(boxes, np.array([d.score for d in detections]), iou_threshold)


def phrase_token_spans(count_pieces: Callable[[str], int], phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Token span [start, end) of each phrase in the prompt '[CLS] p1 . p2 . [SEP]'.

    `count_pieces(text)` is the number of word pieces of `text` without special tokens; BERT's basic
    tokenizer splits on spaces and punctuation first, so pieces of the whole prompt are the
    concatenation of each phrase's pieces and one '.' per phrase.
    """
    spans, cursor = [], 1
    for phrase in phrases:
        n = count_pieces(phrase)
        spans.append((cursor, cursor + n))
        cursor += n + 1
    return spans


def decode_queries(probs: np.ndarray, boxes_cxcywh: np.ndarray, spans: Sequence[tuple[int, int]],
                   phrases: Sequence[str], box_threshold: float, text_threshold: float) -> list[Detection]:
    """Detections from one image's query-token probabilities (Q, L) and normalised cxcywh boxes (Q, 4).

    A query is kept when its best token clears `box_threshold` (GroundingDINO's rule); it is labelled
    with the single phrase whose tokens score highest, and dropped if that phrase is below `text_threshold`.
    """
    probs = np.asarray(probs, dtype=np.float32)
    query_scores = probs.max(axis=1) if probs.size else np.zeros(len(probs), np.float32)
    phrase_scores = np.stack([probs[:, s:e].max(axis=1) for s, e in spans], axis=1)
    best = phrase_scores.argmax(axis=1)
    keep = (query_scores > box_threshold) & (phrase_scores.max(axis=1) > text_threshold)
    return make_detections(cxcywh_to_xyxy(np.asarray(boxes_cxcywh)[keep]), query_scores[keep],
                           [phrases[i] for i in best[keep]])


def make_detections(boxes: np.ndarray, scores: np.ndarray, phrases: Sequence[str]) -> list[Detection]:
    """Detection records from parallel arrays of normalised xyxy boxes, scores and phrases."""
    boxes = clip_boxes(boxes)
    return [Detection(as_box(b), float(s), p) for b, s, p in zip(boxes, scores, phrases, strict=True)]
