"""The configs of the train package: `TrainConfig` (what `instvl train` runs) with its data, optim, run
and eval sections, and `EvalConfig` (what `instvl eval` adds to a train preset).

The model's own config, `InstAPConfig`, lives beside the model (`instvl.train.model`), and
`GroundingConfig` beside the box head (`instvl.train.grounding`).
"""

from typing import Literal

from pydantic import model_validator

from instvl.config import BaseConfig
from instvl.train.grounding import GroundingConfig
from instvl.train.model import InstAPConfig
from instvl.train.retrieval import RerankMode


class DataConfig(BaseConfig):
    """Where the shards are and how samples become model inputs."""

    root: str = "data/instvl"
    """Dataset root written by `instvl datasets ...` (holds manifest.json and shards/)."""
    split: str | None = "train"
    """Only rows of this split (None: every row)."""
    batch_size: int = 8
    """Samples per batch on each rank."""
    num_frames: int = 4
    img_size: int = 224
    crop_size: int = 96
    crop_pad: float = 0.1
    """Each instance box grows by this fraction of its size before cropping (context around the object)."""
    resize: Literal["center_crop", "squash"] = "center_crop"
    normalize: Literal["imagenet", "clip"] = "imagenet"
    max_instances: int = 8
    """Instances per sample; a random subset (fixed per epoch) when a sample has more."""
    instance_boxes: Literal["trajectory", "single"] = "trajectory"
    """'single' uses the trajectory's first box at every frame (the paper's Table 5 ablation)."""
    caption_sampling: Literal["sentence", "full"] = "sentence"
    """'sentence': one sentence of each caption per epoch, cycling through all of them."""
    shuffle_buffer: int = 256
    workers: int = 0
    seed: int = 0
    include_rejected: bool = False
    """Train on rows whose qc.status is 'rejected' too (excluded by default)."""
    drop_last: bool = True
    on_decode_error: Literal["skip", "raise"] = "skip"
    decoder: Literal["pyav", "decord", "auto"] = "pyav"
    """pyav: in the loader process; decord/auto: decord in a crash-isolated worker process (auto falls back
    to PyAV), for shards whose media might crash a decoder."""


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
    """'auto' (newest checkpoint in output_dir, if any), a checkpoint file or a run folder."""
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
    max_samples: int | None = None
    """Stop at the first batch boundary at or after this many samples (None: the whole split)."""
    max_instances: int = 64
    """Instances kept per sample (the train setting may subsample more aggressively)."""
    every: int = 0
    """Optimizer steps between evaluations during training, on rank 0 (0: none)."""


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
