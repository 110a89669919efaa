"""The g+i control of the ablation (`loss.inst_as_global`): instance captions as extra global captions."""

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from instvl.train.model import InstAP, InstAPConfig
from instvl.train.model.instap import LossConfig

TINY = {"vision": {"width": 64, "depth": 2, "heads": 4}, "teacher": {"width": 32, "depth": 2, "heads": 2},
        "text": {"random_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "intermediate_size": 64}}, "embed_dim": 32}


def tiny_model(**loss: Any) -> InstAP:
    torch.manual_seed(0)
    return InstAPConfig.model_validate({**TINY, "loss": loss}).build().train()


def batch(crops_scale: float = 1.0) -> dict[str, Any]:
    """Three clips with 2, 1 and 0 instances (same seed every call; crops scaled by `crops_scale`)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (6, 10), generator=g)
    video = torch.randn(3, 3, 4, 64, 64, generator=g)
    crops = torch.randn(3, 3, 4, 32, 32, generator=g) * crops_scale
    ones = torch.ones(3, 10, dtype=torch.long)
    return {"video": video, "text_ids": ids[:3], "text_mask": ones, "inst_crops": crops,
            "inst_text_ids": ids[3:], "inst_text_mask": ones, "inst_sample_index": torch.tensor([0, 0, 1]),
            "inst_present": torch.ones(3, 4, dtype=torch.bool)}


def losses(model: InstAP, crops_scale: float = 1.0) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)  # the same masks in every call
    return model(batch(crops_scale))


def test_instance_captions_are_scored_against_their_whole_clip() -> None:
    model = tiny_model(inst_as_global=True, inst_temperature="shared")
    out = losses(model)
    assert torch.isfinite(out["loss"]) and out["l_inst"] > 0
    # The crops take no part: any crop pixels give the same loss.
    assert losses(model, crops_scale=0.0)["l_inst"].item() == pytest.approx(out["l_inst"].item(), rel=1e-6)
    out["loss"].backward()
    attn = model.instance_attn.blocks[0].q.weight.grad
    assert attn is not None and attn.abs().sum() == 0  # present for DDP, but untrained
    assert model.vision_proj.weight.grad.abs().sum() > 0 and model.temp_inst is None


def test_the_instance_loss_does_use_the_crops() -> None:
    model = tiny_model()
    assert losses(model, crops_scale=0.0)["l_inst"].item() != pytest.approx(losses(model)["l_inst"].item())


def test_inst_as_global_needs_the_instance_captions() -> None:
    with pytest.raises(ValidationError, match="inst_as_global needs"):
        LossConfig(inst_as_global=True, inst_loss=False)
