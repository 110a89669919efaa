"""InstAPConfig: the typed description of an InstAP model (student, teacher, text tower, masking, losses).

The defaults are the CPU-sized `tiny` model: 64x64 clips of 4 frames in tubelets of 2 and patches of
16 (2 x 16 = 32 tokens), width 96, a random ViT teacher and the real MiniLM text tower. Full presets
set e.g. vision width/depth/heads 768/12/12 (ViT-B/16) or 1024/24/16 (ViT-L), tubelet 1 and a
`clip_hf` teacher such as openai/clip-vit-large-patch14, whose grid is resized to match the student.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from instvl.config import BaseConfig
from instvl.train.model.instance import InstanceConfig
from instvl.train.model.masking import MaskingConfig
from instvl.train.model.teacher_clip import CLIPTeacher
from instvl.train.model.teacher_vit import RandomViTTeacher
from instvl.train.model.text import TextConfig
from instvl.train.model.vit import VisionConfig

if TYPE_CHECKING:
    from instvl.train.model.instap import InstAP



def _teacher_kind(value: Any) -> str:
    """The teacher's `kind`, 'vit_random' when a YAML section leaves it out."""
    if isinstance(value, dict):
        return value.get("kind", "vit_random")
    return getattr(value, "kind", "vit_random")


TeacherConfig = Annotated[
    Annotated[RandomViTTeacher.Config, Tag("vit_random")] | Annotated[CLIPTeacher.Config, Tag("clip_hf")],
    Discriminator(_teacher_kind),
]


class LossConfig(BaseConfig):
    """Weights and switches of Total = w_rec * L_rec + w_glob * L_glob + w_inst * L_inst."""

    w_rec: float = Field(1.0, ge=0)
    w_glob: float = Field(1.0, ge=0)
    w_inst: float = Field(0.1, ge=0)
    """Instance loss weight (the paper's lambda_inst = 0.1)."""
    inst_loss: bool = True
    """False drops the instance branch from training (the L_rec + L_global ablation row)."""
    inst_temperature: Literal["separate", "shared"] = "separate"
    """Its own learnable temperature for L_inst (paper) or the global one (ablation baseline)."""
    align_layers: int = Field(2, ge=1)
    """How many last student/teacher layers L_rec aligns (UMT: 6)."""
    temp_init: float = 0.07
    temp_min: float = 1e-3
    temp_max: float = 0.5


class InstAPConfig(BaseConfig):
    """An InstAP model; `build()` constructs it (loading the text tower and a CLIP teacher if named)."""

    vision: VisionConfig = VisionConfig()
    teacher: TeacherConfig = RandomViTTeacher.Config()
    text: TextConfig = TextConfig()
    masking: MaskingConfig = MaskingConfig()
    instance: InstanceConfig = InstanceConfig()
    loss: LossConfig = LossConfig()
    embed_dim: int = Field(256, ge=8)
    """Size of the shared video/text/instance embedding space (W_v, W_t outputs)."""
    grad_checkpointing: bool = False
    """Recompute student blocks (and BERT layers) in the backward pass to save activation memory."""

    @model_validator(mode="after")
    def _check_layers(self) -> "InstAPConfig":
        if self.loss.align_layers > self.vision.depth:
            raise ValueError(f"loss.align_layers={self.loss.align_layers} exceeds vision.depth={self.vision.depth}")
        teacher_depth = getattr(self.teacher, "depth", None)
        if teacher_depth is not None and self.loss.align_layers > teacher_depth:
            raise ValueError(f"loss.align_layers={self.loss.align_layers} exceeds teacher.depth={teacher_depth}")
        heads = self.instance.heads or self.vision.heads
        if self.vision.width % heads:
            raise ValueError(f"instance.heads={heads} does not divide vision.width={self.vision.width}")
        return self

    def build(self) -> "InstAP":
        from instvl.train.model.instap import InstAP

        return InstAP(self)
