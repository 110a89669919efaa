"""`instvl eval`: global and instance retrieval, the instance error breakdown, grounding and pictures.

The eval split is embedded once (`embed_split`, also usable from the trainer); global retrieval pairs
each clip with its global caption, instance retrieval each instance (crop clip cross-attending to its
scene) with its caption over all instances of the split. With `grounding.enabled` a box head is
trained on the train split and scored on the eval split. Results go to OUTPUT/eval.json, pictures to
OUTPUT/images/, and a table to stdout.

    instvl eval --config train/tiny --set data.root=out/synth --set checkpoint=runs/tiny
    instvl eval --config train/tiny --set data.root=out/synth --set grounding.enabled=true \
        --set rerank=dual_softmax
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from instvl.deps import require
from instvl.geometry import cxcywh_to_xyxy
from instvl.train import checkpoint as ckpt
from instvl.train import distributed as dist_utils
from instvl.train import visualize
from instvl.train.annotations import caption_targets, multi_caption_retrieval, read_annotations
from instvl.train.batch import to_device, tokenize
from instvl.train.config import EvalConfig, SourceConfig, TrainConfig
from instvl.train.data import InstVLDataset
from instvl.train.error_analysis import instance_error_breakdown
from instvl.train.grounding import (
    evaluate_grounding_head,
    predict_boxes,
    train_grounding_head,
)
from instvl.train.model import load_tokenizer
from instvl.train.retrieval import RerankMode, Similarity, embedding_retrieval
from instvl.train.transforms import clean_text

torch = require("torch", "train")
log = logging.getLogger(__name__)
THUMB = 48
OVERLAY_PIXELS = 160
"""Frames of attention overlays are enlarged to about this height."""


@dataclass
class Embeddings:
    """L2-normalised embeddings of a split: clips and global captions, instances and their captions."""

    video: Any
    text: Any
    sample_ids: list[str] = field(default_factory=list)
    global_captions: list[str] = field(default_factory=list)
    inst_video: Any = None
    inst_text: Any = None
    inst_sample_ids: list[str] = field(default_factory=list)
    instance_ids: list[int] = field(default_factory=list)
    instance_captions: list[str] = field(default_factory=list)
    inst_areas: list[float] = field(default_factory=list)
    """Mean normalised box area of each instance over its present frames."""
    thumbnails: list[NDArray[Any]] = field(default_factory=list)
    inst_thumbnails: list[NDArray[Any]] = field(default_factory=list)


def _mean_areas(boxes: Any, present: Any) -> list[float]:
    areas = ((boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0))
    mask = present.float()
    return (areas * mask).sum(-1).div(mask.sum(-1).clamp(min=1)).tolist()


def _middle_frames(clips: Any) -> list[NDArray[Any]]:
    middle = clips.shape[2] // 2
    frames = clips[:, :, middle].float().cpu()
    small = torch.nn.functional.interpolate(frames, size=(THUMB, THUMB), mode="bilinear")
    return [visualize.clip_to_uint8(frame[:, None])[0] for frame in small]


def embed_split(model: Any, batches: Any, device: Any = "cpu", max_samples: int | None = None,
                thumbnails: bool = False) -> Embeddings:
    """Embed every sample and instance of `batches` (collated eval batches) with the model in eval mode.

    With `max_samples`, embedding stops at the first batch boundary at or after that many samples.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[Any]] = {"video": [], "text": [], "inst_video": [], "inst_text": []}
    emb = Embeddings(None, None)
    try:
        with torch.no_grad():
            for raw in batches:
                if max_samples is not None and len(emb.sample_ids) >= max_samples:
                    break
                _embed_batch(model, to_device(raw, device), emb, parts, thumbnails)
    finally:
        model.train(was_training)
    emb.video, emb.text, emb.inst_video, emb.inst_text = (
        torch.cat(parts[k]) if parts[k] else torch.zeros(0, 1)
        for k in ("video", "text", "inst_video", "inst_text"))
    return emb


def _embed_batch(model: Any, batch: dict[str, Any], emb: Embeddings, parts: dict[str, list[Any]],
                 thumbnails: bool) -> None:
    parts["video"].append(model.encode_video(batch["video"]).float().cpu())
    parts["text"].append(model.encode_text(batch["text_ids"], batch["text_mask"]).float().cpu())
    emb.sample_ids += batch["sample_ids"]
    emb.global_captions += batch["global_captions"]
    if thumbnails:
        emb.thumbnails += _middle_frames(batch["video"])
    if batch["inst_sample_index"].numel():
        _embed_instances(model, batch, emb, parts, thumbnails)


def _embed_instances(model: Any, batch: dict[str, Any], emb: Embeddings, parts: dict[str, list[Any]],
                     thumbnails: bool) -> None:
    index = batch["inst_sample_index"]
    inst_video = model.encode_instances(batch["inst_crops"], batch["video"], index)
    parts["inst_video"].append(inst_video.float().cpu())
    inst_text = model.encode_text(batch["inst_text_ids"], batch["inst_text_mask"])
    parts["inst_text"].append(inst_text.float().cpu())
    emb.inst_sample_ids += [batch["sample_ids"][i] for i in index.tolist()]
    emb.instance_ids += [int(i) for i in batch["instance_ids"]]
    emb.instance_captions += batch["instance_captions"]
    emb.inst_areas += _mean_areas(batch["inst_boxes"].cpu(), batch["inst_present"].cpu())
    if thumbnails:
        emb.inst_thumbnails += _middle_frames(batch["inst_crops"])


def retrieval_report(emb: Embeddings, rerank: RerankMode = "none",
                     temperature: float = 0.01) -> dict[str, Any]:
    """Global and instance retrieval (plain, plus re-ranked when asked) and the instance error breakdown."""
    report: dict[str, Any] = {"num_samples": len(emb.sample_ids), "num_instances": len(emb.instance_ids)}
    modes: list[RerankMode] = ["none"] if rerank == "none" else ["none", rerank]
    for mode in modes:
        suffix = "" if mode == "none" else f"_{mode}"
        report[f"global{suffix}"] = embedding_retrieval(emb.text, emb.video, rerank=mode,
                                                        temperature=temperature).to_dict()
        if emb.instance_ids:
            report[f"instance{suffix}"] = embedding_retrieval(emb.inst_text, emb.inst_video, rerank=mode,
                                                              temperature=temperature).to_dict()
    if emb.instance_ids:
        sim = Similarity.from_embeddings(emb.inst_text, emb.inst_video)
        report["errors"] = {direction: instance_error_breakdown(
            sim, emb.inst_sample_ids, emb.instance_captions, emb.instance_ids, direction=direction,
            box_areas=emb.inst_areas).to_dict() for direction in ("v2t", "t2v")}
    return report


def load_model(cfg: EvalConfig, device: str) -> Any:
    """The configured model, with the checkpoint's weights when one is given (a file or a run folder)."""
    model = cfg.model.build()
    if cfg.checkpoint is None:
        log.warning("no checkpoint given: evaluating the untrained initialisation of the model")
        return model.to(device).eval()
    path = Path(cfg.checkpoint)
    if path.is_dir():
        newest = ckpt.latest_checkpoint(path) or ckpt.latest_checkpoint(path.parent)
        if newest is None:
            raise ckpt.CheckpointError(f"{cfg.checkpoint}: no step-*.pt checkpoint in "
                                       f"{cfg.checkpoint}/checkpoints")
        path = newest
    ckpt.load_model_state(model, ckpt.load_checkpoint(path)["model"], path)
    log.info("evaluating %s", path)
    return model.to(device).eval()


def eval_dataset(cfg: TrainConfig, tokenizer: Any, split: str | None,
                 root: str | None = None) -> InstVLDataset:
    """A finite, deterministic pass over one split of `root` (default: the eval root), with the eval caps.

    Middle frames, full captions, up to `eval.max_instances` instances per sample, no DataLoader workers.
    """
    data = cfg.data.model_copy(update={"root": root or cfg.eval_root, "split": split,
                                       "max_instances": cfg.eval.max_instances, "workers": 0})
    return InstVLDataset(data, tokenizer, cfg.model.text.max_len, train=False, infinite=False)


def _top_k(queries: Any, gallery: Any, count: int, k: int = 5) -> tuple[list[list[int]], list[list[bool]]]:
    """Ranked gallery indices of the first `count` queries (query i's match is item i), and correctness."""
    scores = queries[:count] @ gallery.T
    ranked = scores.topk(min(k, gallery.shape[0]), dim=1).indices.tolist()
    return ranked, [[item == row for item in items] for row, items in enumerate(ranked)]


def save_retrieval_images(emb: Embeddings, folder: Path, count: int) -> list[str]:
    """Retrieval grids of the first `count` global and instance caption queries."""
    written = []
    for name, texts, text_emb, vis_emb, thumbs in (
            ("global_retrieval", emb.global_captions, emb.text, emb.video, emb.thumbnails),
            ("instance_retrieval", emb.instance_captions, emb.inst_text, emb.inst_video,
             emb.inst_thumbnails)):
        n = min(count, len(texts))
        if n and thumbs:
            ranked, correct = _top_k(text_emb, vis_emb, n)
            grid = visualize.retrieval_grid(folder / f"{name}.png", texts[:n], thumbs, ranked, correct)
            written.append(str(grid))
    return written


def save_attention_images(model: Any, head: Any, batches: Any, folder: Path, count: int,
                          device: str) -> list[str]:
    """Attention of `count` instance captions over their scene, with predicted and true boxes."""
    written: list[str] = []
    for raw in batches:
        batch = to_device(raw, device)
        if not batch["inst_sample_index"].numel():
            continue
        with torch.no_grad():
            out = predict_boxes(model, head, batch)
        for n in range(min(count - len(written), out.boxes.shape[0])):
            clip = visualize.clip_to_uint8(batch["video"][batch["inst_sample_index"][n]])
            path = folder / f"attention_{len(written):02d}.png"
            pred = cxcywh_to_xyxy(out.boxes[n].float().cpu().numpy())
            attention = out.attention[n].cpu().numpy()
            visualize.attention_overlay(path, clip, attention, batch["instance_captions"][n],
                                        pred, batch["inst_boxes"][n].cpu().numpy(),
                                        scale=max(1, OVERLAY_PIXELS // clip.shape[1]))
            written.append(str(path))
        if len(written) >= count:
            break
    return written


def run_grounding(cfg: EvalConfig, model: Any, tokenizer: Any, device: str, folder: Path) -> dict[str, Any]:
    """Train the box head on the grounding train split, score it on the eval split, draw its attention."""
    train_data = eval_dataset(cfg, tokenizer, cfg.grounding.train_split, root=cfg.data.root)
    move = lambda b: to_device(b, device)  # noqa: E731
    head, losses = train_grounding_head(model, train_data, cfg.grounding, move)
    eval_data = eval_dataset(cfg, tokenizer, cfg.eval.split)
    metrics = evaluate_grounding_head(model, head, eval_data, cfg.grounding, move)
    images = save_attention_images(model, head, eval_data, folder, cfg.num_examples,
                                   device) if cfg.num_examples else []
    return {**metrics, "freeze_backbone": cfg.grounding.freeze_backbone, "steps": cfg.grounding.steps,
            "loss_first": losses[0], "loss_last": losses[-1], "images": images}


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the whole evaluation; returns the report that is also written to OUTPUT/eval.json."""
    device = dist_utils.resolve_device(cfg.run.device)
    output = Path(cfg.output or Path(cfg.run.output_dir) / "eval")
    images = output / "images"
    model = load_model(cfg, device)
    tokenizer = load_tokenizer(cfg.model.text)
    if cfg.eval.annotations:  # zero-shot global retrieval on an annotation list, several captions per video
        report = {"checkpoint": cfg.checkpoint, **zero_shot_report(model, cfg, tokenizer, device)}
        output.mkdir(parents=True, exist_ok=True)
        (output / "eval.json").write_text(json.dumps(report, indent=2))
        return report
    emb = embed_split(model, eval_dataset(cfg, tokenizer, cfg.eval.split), device, cfg.eval.max_samples,
                      thumbnails=cfg.num_examples > 0)
    if not emb.sample_ids:
        raise ValueError(f"{cfg.eval_root}: no samples in split {cfg.eval.split!r} to evaluate")
    report = {"checkpoint": cfg.checkpoint, "eval_root": cfg.eval_root,
              "eval_split": cfg.eval.split, "rerank": cfg.rerank,
              **retrieval_report(emb, cfg.rerank, cfg.rerank_temperature)}
    report["images"] = save_retrieval_images(emb, images, cfg.num_examples) if cfg.num_examples else []
    if cfg.grounding.enabled:
        report["grounding"] = run_grounding(cfg, model, tokenizer, device, images)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(report, indent=2))
    log.info("wrote %s", output / "eval.json")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report's headline numbers as a markdown table."""
    head = "| retrieval | T2V R@1 | T2V R@5 | T2V R@10 | V2T R@1 | V2T R@5 | V2T R@10 | mean R |"
    lines = [head, "|" + "---|" * 8]
    for key in [k for k in report if k.startswith(("global", "instance", "zero_shot"))
                and isinstance(report[k], dict)]:
        r = report[key]
        values = [r[f"{d}_r{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)] + [r["mean_recall"]]
        lines.append(f"| {key} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    if "errors" in report:
        err = report["errors"]["v2t"]
        shares = ", ".join(f"{c} {p:.1f}%" for c, p in err["percentages"].items())
        lines.append(f"\ninstance V2T errors: {err['num_errors']}/{err['num_queries']} ({shares})")
    if "grounding" in report:
        g = report["grounding"]
        ious = ", ".join(f"{k} {v:.1f}" for k, v in g.items() if k.startswith("iou@"))
        lines.append(f"grounding ({int(g['num_instances'])} instances): {ious}, mIoU {g['miou']:.1f}")
    return "\n".join(lines)


def main(cfg: EvalConfig) -> int:
    """CLI entry: evaluate and print the table."""
    report = evaluate(cfg)
    print(format_table(report))
    return 0


def zero_shot_report(model: Any, cfg: EvalConfig, tokenizer: Any, device: str) -> dict[str, Any]:
    """Zero-shot global retrieval on the annotation list `cfg.eval.annotations` (several captions per video).

    Videos (middle frames) and images (1 frame) are embedded unmasked; every caption is embedded
    separately. Returns {'zero_shot': {...recalls...}, 'num_videos', 'num_captions'} (plus the
    re-ranked recalls under 'zero_shot_<mode>' when `cfg.rerank` asks).
    """
    assert cfg.eval.annotations is not None
    entries = read_annotations(cfg.eval.annotations, cfg.eval.media_root)
    source = SourceConfig(root=cfg.eval.annotations, format="annotations", media_root=cfg.eval.media_root)
    data = cfg.data.model_copy(update={"max_instances": 0, "workers": 0})
    dataset = InstVLDataset(data, tokenizer, cfg.model.text.max_len, train=False, infinite=False,
                            sources=[source])
    embedded: dict[str, Any] = {}
    model.eval()
    with torch.no_grad():
        for raw in dataset:
            batch = to_device(raw, device)
            if batch["video"].shape[0] == 0:
                continue
            vectors = model.encode_video(batch["video"]).float().cpu()
            embedded.update(zip(batch["sample_ids"], vectors, strict=True))
        kept = [e for e in entries if e.media in embedded]
        if len(kept) < len(entries):
            log.warning("zero-shot: %d of %d media could not be decoded and are left out",
                        len(entries) - len(kept), len(entries))
        if not kept:
            raise ValueError(f"{cfg.eval.annotations}: no media could be decoded")
        texts, owners = caption_targets(kept)
        text_parts = []
        for start in range(0, len(texts), 256):
            ids, mask = tokenize(tokenizer, [clean_text(t) for t in texts[start:start + 256]],
                                 cfg.model.text.max_len)
            text_parts.append(model.encode_text(ids.to(device), mask.to(device)).float().cpu())
    video = torch.stack([embedded[e.media] for e in kept])
    text = torch.cat(text_parts)
    report: dict[str, Any] = {"annotations": cfg.eval.annotations, "num_videos": len(kept),
                              "num_captions": len(texts),
                              "zero_shot": multi_caption_retrieval(text, video, owners)}
    if cfg.rerank != "none":
        report[f"zero_shot_{cfg.rerank}"] = multi_caption_retrieval(text, video, owners, cfg.rerank,
                                                                     cfg.rerank_temperature)
    return report
