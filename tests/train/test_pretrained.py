"""`run.init_from`: weights-only starts from instvl checkpoints and from UMT checkpoints (key mapping)."""

from pathlib import Path

import pytest
import torch

from instvl.train import checkpoint as ckpt
from instvl.train.model import InstAP, InstAPConfig
from instvl.train.pretrained import detect_format, init_weights, umt_to_instap

WIDTH, DEPTH, EMBED = 32, 2, 16
UMT_UNMAPPED = ("text.", "text_proj.", "align_heads.", "instance_attn.", "temp_glob.", "temp_inst.")


def tiny_model(seed: int = 0) -> InstAP:
    torch.manual_seed(seed)
    text = {"random_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                              "intermediate_size": 64}}
    return InstAPConfig.model_validate({
        "vision": {"img_size": 32, "num_frames": 4, "tubelet_size": 2, "patch_size": 8, "width": WIDTH,
                   "depth": DEPTH, "heads": 2},
        "teacher": {"width": 32, "depth": 1, "heads": 2, "patch_size": 8}, "text": text,
        "loss": {"align_layers": 1}, "embed_dim": EMBED}).build()


def umt_state(layer_scale: bool = True) -> dict[str, torch.Tensor]:
    """A UMT stage-2 state dict (DDP-saved, `module.` prefix) for a ViT of the tiny model's shape."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    enc = "module.vision_encoder.encoder."
    state = {f"{enc}patch_embed.proj.weight": rand(WIDTH, 3, 2, 8, 8),
             f"{enc}patch_embed.proj.bias": rand(WIDTH),
             f"{enc}norm.weight": rand(WIDTH), f"{enc}norm.bias": rand(WIDTH),
             f"{enc}pos_embed": rand(1, 33, WIDTH),  # a learned table with a class slot: not mappable
             "module.vision_encoder.pool_norm.weight": rand(WIDTH),
             "module.vision_encoder.pool_norm.bias": rand(WIDTH),
             "module.vision_proj.weight": rand(EMBED, WIDTH), "module.vision_proj.bias": rand(EMBED),
             "module.vision_encoder.clip_decoder.0.head.weight": rand(64, WIDTH),
             "module.text_encoder.bert.embeddings.word_embeddings.weight": rand(50, 32),
             "module.text_proj.weight": rand(EMBED, 32), "module.temp": torch.tensor(0.07),
             "module.itm_head.weight": rand(2, 32)}
    for i in range(DEPTH):
        block = f"{enc}blocks.{i}."
        state |= {f"{block}norm1.weight": rand(WIDTH), f"{block}norm1.bias": rand(WIDTH),
                  f"{block}attn.qkv.weight": rand(3 * WIDTH, WIDTH), f"{block}attn.q_bias": rand(WIDTH),
                  f"{block}attn.v_bias": rand(WIDTH), f"{block}attn.proj.weight": rand(WIDTH, WIDTH),
                  f"{block}attn.proj.bias": rand(WIDTH), f"{block}norm2.weight": rand(WIDTH),
                  f"{block}norm2.bias": rand(WIDTH), f"{block}mlp.fc1.weight": rand(4 * WIDTH, WIDTH),
                  f"{block}mlp.fc1.bias": rand(4 * WIDTH), f"{block}mlp.fc2.weight": rand(WIDTH, 4 * WIDTH),
                  f"{block}mlp.fc2.bias": rand(WIDTH)}
        if layer_scale and i == 1:
            state |= {f"{block}gamma_1": rand(WIDTH), f"{block}gamma_2": rand(WIDTH)}
    return state


def test_umt_names_map_onto_the_student() -> None:
    umt = umt_state()
    mapped, dropped = umt_to_instap(umt)
    enc = "module.vision_encoder.encoder."
    assert torch.equal(mapped["student.patch_embed.weight"], umt[f"{enc}patch_embed.proj.weight"])
    assert torch.equal(mapped["student.blocks.0.mlp.0.weight"], umt[f"{enc}blocks.0.mlp.fc1.weight"])
    assert torch.equal(mapped["student.blocks.0.mlp.2.bias"], umt[f"{enc}blocks.0.mlp.fc2.bias"])
    assert torch.equal(mapped["student.norm.bias"], umt[f"{enc}norm.bias"])
    assert torch.equal(mapped["pool_norm.weight"], umt["module.vision_encoder.pool_norm.weight"])
    qkv_bias = mapped["student.blocks.0.attn.qkv.bias"]
    assert torch.equal(qkv_bias[:WIDTH], umt[f"{enc}blocks.0.attn.q_bias"])
    assert torch.equal(qkv_bias[WIDTH:2 * WIDTH], torch.zeros(WIDTH))
    assert torch.equal(qkv_bias[2 * WIDTH:], umt[f"{enc}blocks.0.attn.v_bias"])
    # Layer scale folded into the branch's last linear layer: gamma * (W h + b) == (gamma W) h + gamma b.
    h = torch.randn(5, 4 * WIDTH)
    gamma = umt[f"{enc}blocks.1.gamma_2"]
    expected = gamma * torch.nn.functional.linear(h, umt[f"{enc}blocks.1.mlp.fc2.weight"],
                                                  umt[f"{enc}blocks.1.mlp.fc2.bias"])
    folded = torch.nn.functional.linear(h, mapped["student.blocks.1.mlp.2.weight"],
                                        mapped["student.blocks.1.mlp.2.bias"])
    assert torch.allclose(folded, expected, atol=1e-5)
    assert not any("gamma" in k or "q_bias" in k for k in mapped)
    assert {"text_proj.weight", "temp", "vision_encoder.encoder.pos_embed",
            "vision_encoder.clip_decoder.0.head.weight"} <= set(dropped)
    # The stage-1 encoder (single_modality) is named without `vision_encoder.`; no qkv bias at all is zeros.
    stage1, _ = umt_to_instap({"encoder.blocks.0.attn.qkv.weight": torch.ones(3 * WIDTH, WIDTH)})
    assert torch.equal(stage1["student.blocks.0.attn.qkv.bias"], torch.zeros(3 * WIDTH))


def test_init_from_a_umt_checkpoint_is_strict_except_the_named_parts(tmp_path: Path) -> None:
    path = tmp_path / "umt.pth"
    torch.save({"model": umt_state(), "epoch": 3}, path)
    model = tiny_model()
    text_before = model.text_proj.weight.detach().clone()
    init_weights(model, path, "auto", UMT_UNMAPPED)
    mapped, _ = umt_to_instap(umt_state())
    state = model.state_dict()
    for key, value in mapped.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(model.text_proj.weight, text_before)  # named in the skip list: kept fresh
    with pytest.raises(ckpt.CheckpointError, match="instance_attn"):
        init_weights(tiny_model(), path, "umt", tuple(p for p in UMT_UNMAPPED if p != "instance_attn."))
    video = torch.randn(1, 3, 4, 32, 32)
    assert model.encode_video(video).shape == (1, EMBED)


def test_init_from_an_instvl_checkpoint_takes_the_weights_only(tmp_path: Path) -> None:
    source = tiny_model(seed=1)
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 7),
                                {"model": source.state_dict(), "optimizer": {}, "step": 7})
    assert detect_format(ckpt.load_checkpoint(path)) == "instvl"
    model = tiny_model(seed=0)
    init_weights(model, tmp_path)  # a run folder: its newest checkpoint
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("instance_attn.")}
    torch.save({"instvl_version": "x", "model": partial}, tmp_path / "partial.pt")
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        init_weights(tiny_model(), tmp_path / "partial.pt")
    init_weights(tiny_model(), tmp_path / "partial.pt", skip=("instance_attn.",))
    with pytest.raises(ckpt.CheckpointError, match="cannot tell"):
        detect_format({"model": {"foo.weight": torch.zeros(1)}})
