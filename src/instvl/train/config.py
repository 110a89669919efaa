"""The configs of the train package: `TrainConfig` (what `instvl train` runs) with its data, optim, run
and eval sections, and `EvalConfig` (what `instvl eval` adds to a train preset).

The model's own config, `InstAPConfig`, lives beside the model (`instvl.train.model`), and
`GroundingConfig` beside the box head (`instvl.train.grounding`).
"""

from typing import Literal

from pydantic import Field, model_validator

from instvl.config import BaseConfig
from instvl.train.grounding import GroundingConfig
from instvl.train.model import InstAPConfig
from instvl.train.retrieval import RerankMode


class SourceConfig(BaseConfig):
    """One more dataset mixed into training with `data.root` (UMT's MetaLoader: whole batches per source)."""

    root: str
    """A dataset root written by instvl (format 'shards') or an annotation list file ('annotations')."""
    format: Literal["shards", "annotations"] = "shards"
    """'annotations': a JSON/JSONL/CSV list of media (path or URL) and caption(s); see train.annotations."""
    media_root: str | None = None
    """Folder that relative media paths of an annotation list are resolved against (default: its folder)."""
    split: str | None = "train"
    """Only rows of this split (shards; None: every row). Annotation lists have no split."""
    ratio: float = Field(1.0, gt=0)
    """Share of the training batches drawn from this source, relative to the other sources' ratios."""
    video_share: float | None = Field(None, ge=0, le=1)
    """Share of this source's batches that are video batches (None: in proportion to its video rows)."""


class DataConfig(BaseConfig):
    """Where the shards are and how samples become model inputs."""

    root: str = "data/instvl"
    """Dataset root written by `instvl datasets ...` (holds manifest.json and shards/)."""
    split: str | None = "train"
    """Only rows of this split (None: every row)."""
    ratio: float = Field(1.0, gt=0)
    """Share of the training batches drawn from `root` when `sources` adds more datasets."""
    video_share: float | None = Field(None, ge=0, le=1)
    """Share of `root`'s batches that are video batches (None: in proportion to its video rows)."""
    sources: list[SourceConfig] = []
    """More datasets (shard roots or annotation lists) mixed in by ratio; each batch comes from one source
    and holds only images or only videos."""
    batch_size: int = 8
    """Video samples per batch on each rank."""
    image_batch_size: int | None = None
    """Image samples per batch on each rank (None: batch_size). Images run as 1-frame clips, so a GPU
    takes many more of them per step."""
    num_frames: int = 4
    """Frames sampled from a video (an image is one frame)."""
    img_size: int = 224
    decode_short_side: int | None = None
    """Frames are shrunk while decoding so that their short side is at most this (None: img_size); the
    scene and the instance crops are both cut from this reduced frame."""
    crop_size: int = 96
    crop_frames: int | None = None
    """Frames of a video instance's crop clip, evenly spread over the sampled frames (None: all of them);
    an image instance has one. Fewer crop frames make the instance branch cheaper."""
    crop_pad: float = 0.1
    """Each instance box grows by this fraction of its size before cropping (context around the object)."""
    resize: Literal["center_crop", "squash"] = "center_crop"
    normalize: Literal["imagenet", "clip"] = "imagenet"
    max_instances: int = Field(8, ge=0)
    """Instances per sample; when a sample has more, a random subset drawn from (seed, epoch, sample id)."""
    max_instances_image: int | None = Field(None, ge=0)
    """Instances per image sample in training (None: max_instances); evaluation keeps max_instances.
    An image step is a small fraction of a video step (1 frame, half of it masked), so a few instance
    captions through the text tower outweigh it: a lower cap keeps the instance branch's share in bounds."""
    instance_text_len: int | None = Field(None, ge=4)
    """Tokens per instance caption in training (None: model.text.max_len); a longer caption is cut, and
    the share of cut captions is logged (`text_cut_inst`, `text_cut_global`)."""
    instance_boxes: Literal["trajectory", "single"] = "trajectory"
    """'single' uses the trajectory's first box at every frame (the paper's Table 5 ablation)."""
    caption_sampling: Literal["sentence", "full"] = "sentence"
    """'sentence': one sentence of each caption per epoch, cycling through all of them."""
    shuffle_buffer: int = 256
    """Rows each reader shuffles through (also bounded in bytes by shuffle_buffer_mb)."""
    shuffle_buffer_mb: float = Field(256.0, gt=0)
    """Most encoded media (MB) each reader's shuffle buffer holds; a video-heavy source fills it with
    fewer rows than shuffle_buffer."""
    workers: int = 0
    seed: int = 0
    include_rejected: bool = False
    """Train on rows whose qc.status is 'rejected' too (excluded by default)."""
    include_unreviewed: bool = False
    """Train on rows routed to review that no reviewer has judged yet too (held out by default;
    `qa.routing.awaiting_review`)."""
    drop_last: bool = True
    on_decode_error: Literal["skip", "raise"] = "skip"
    decoder: Literal["pyav", "decord", "auto"] = "pyav"
    """pyav: in the loader process; decord/auto: decord in a crash-isolated worker process (auto falls back
    to PyAV), for shards whose media might crash a decoder."""
    decode_quality: Literal["exact", "fast", "draft"] = "exact"
    """PyAV/Pillow speed for pixels (`instvl.media.decode.Quality`): exact; fast (shrunk while converting
    to RGB, JPEGs decoded at 1/2-1/8 size: only the resampling differs); draft (fast, and H.264's
    deblocking filter skipped: approximate pixels). Frame indices are exact in all three."""

    @property
    def short_side(self) -> int:
        """The short side frames are decoded at."""
        return self.decode_short_side or self.img_size

    def batch_size_for(self, media_type: str) -> int:
        """Samples per batch of this media type ('image' or 'video')."""
        return (self.image_batch_size or self.batch_size) if media_type == "image" else self.batch_size

    def instance_cap(self, media_type: str | None, train: bool) -> int:
        """Instances kept per sample of this media type: max_instances_image for training images."""
        if train and media_type == "image" and self.max_instances_image is not None:
            return self.max_instances_image
        return self.max_instances

    def all_sources(self) -> list[SourceConfig]:
        """`root` (as the first source) and the extra `sources`."""
        first = SourceConfig(root=self.root, split=self.split, ratio=self.ratio, video_share=self.video_share)
        return [first, *self.sources]


class OptimConfig(BaseConfig):
    """Optimizer and schedule."""

    lr: float = 1e-4
    min_lr_ratio: float = 0.01
    """The cosine schedule ends at lr * min_lr_ratio."""
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    steps: int = 100
    """Optimizer steps of the whole run."""
    grad_accum: int = 1
    """Batches per optimizer step."""
    clip_grad: float | None = 1.0


class RunConfig(BaseConfig):
    """Where the run writes, how often, and on what hardware."""

    output_dir: str = "runs/instap"
    log_every: int = 10
    ckpt_every: int = 0
    """Optimizer steps between checkpoints (0: only the final one)."""
    keep_last: int = 2
    resume: str | None = None
    """'auto' (newest checkpoint in output_dir, if any), a checkpoint file or a run folder. With another
    number of ranks or data.workers than the checkpoint's, model, optimizer and schedule carry over and the
    data stream restarts at the next epoch boundary (a warning says so)."""
    init_from: str | None = None
    """Start from these weights only (an instvl checkpoint or run folder, or a UMT checkpoint); optimizer,
    schedule and data start fresh. Ignored when `resume` finds a checkpoint. See `instvl.train.pretrained`."""
    init_format: Literal["auto", "instvl", "umt"] = "auto"
    """How to read `init_from`: 'umt' maps UMT's student ViT names onto the student (auto: by its keys)."""
    init_skip: list[str] = []
    """Model key prefixes that keep their fresh initialisation (e.g. 'text.', 'instance_attn.'); every other
    trainable weight must come from `init_from`."""
    precision: Literal["bf16", "fp32"] = "fp32"
    strategy: Literal["ddp", "fsdp", "none"] = "ddp"
    """Used when launched by torchrun with more than one process."""
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True


class EvalSplitConfig(BaseConfig):
    """The held-out split that retrieval is measured on, by `instvl eval` and during training."""

    root: str | None = None
    """Dataset root to evaluate (None: data.root)."""
    split: str | None = "val"
    """Split to evaluate ('val', 'test'; None: every row)."""
    annotations: str | None = None
    """An annotation list (JSON/JSONL/CSV of media and captions, `instvl.train.annotations`): `instvl eval`
    then measures zero-shot global retrieval on it (several captions per video) instead of the root."""
    media_root: str | None = None
    """Folder that the annotation list's relative media paths are resolved against (default: its folder)."""
    max_samples: int | None = None
    """Stop at the first batch boundary at or after this many samples (None: the whole split)."""
    max_instances: int = 64
    """Instances kept per sample (the train setting may subsample more aggressively)."""
    every: int = 0
    """Optimizer steps between evaluations during training (0: none): on rank 0 under DDP, on every rank
    (each embedding the whole split, so the sharded forwards line up) under FSDP."""


class TrainConfig(BaseConfig):
    """Everything one training run needs."""

    model: InstAPConfig = InstAPConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    eval: EvalSplitConfig = EvalSplitConfig()

    @property
    def eval_root(self) -> str:
        """The dataset root that is evaluated: eval.root, or data.root when it is unset."""
        return self.eval.root or self.data.root

    @model_validator(mode="after")
    def _check_shapes(self) -> "TrainConfig":
        vision = self.model.vision
        if self.data.num_frames != vision.num_frames:
            raise ValueError(f"data.num_frames={self.data.num_frames} differs from "
                             f"model.vision.num_frames={vision.num_frames}")
        for name in ("img_size", "crop_size"):
            if getattr(self.data, name) % vision.patch_size:
                raise ValueError(f"data.{name}={getattr(self.data, name)} is not a multiple of "
                                 f"model.vision.patch_size={vision.patch_size}")
        crop_frames = self.data.crop_frames
        if crop_frames is not None and not (0 < crop_frames <= vision.num_frames
                                            and crop_frames % vision.tubelet_size == 0):
            raise ValueError(f"data.crop_frames={crop_frames} must lie in [1, {vision.num_frames}] and be a "
                             f"multiple of model.vision.tubelet_size={vision.tubelet_size}")
        return self


class EvalConfig(TrainConfig):
    """A train preset plus what `instvl eval` needs; `instvl eval --config train/tiny` works as is.

    What is evaluated (root, split, sample and instance caps) is the preset's `eval` section.
    """

    checkpoint: str | None = None
    """Checkpoint file, or a run folder (its newest checkpoint); None evaluates the untrained init."""
    output: str | None = None
    """Folder for eval.json and images (default: RUN_OUTPUT/eval)."""
    rerank: RerankMode = "none"
    """'dual_softmax' adds re-ranked retrieval beside the plain embedding-similarity scores."""
    rerank_temperature: float = 0.01
    num_examples: int = 8
    """Queries shown in each retrieval grid and clips in the attention overlays (0: no images)."""
    grounding: GroundingConfig = GroundingConfig()
