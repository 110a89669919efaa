"""InstAP components and the whole model on tiny random configs (the MiniLM text tower in one test)."""

from collections.abc import Callable
from typing import Any

import pytest
import torch

from instvl.train.model import InstAP, InstAPConfig, load_tokenizer
from instvl.train.model.instance import GlobalLocalAttention, InstanceConfig
from instvl.train.model.teacher_clip import CLIPTeacher
from instvl.train.model.teacher_vit import RandomViTTeacher
from instvl.train.model.text import TextConfig
from instvl.train.model.vit import VisionConfig

TINY_TEXT = {"random_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "intermediate_size": 64}}
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8}


@pytest.fixture
def make_model() -> Callable[..., InstAP]:
    """Factory: a tiny InstAP with a random text tower; keyword sections override the config."""

    def make(**sections: Any) -> InstAP:
        torch.manual_seed(0)
        data = {"vision": {"width": 64, "depth": 2, "heads": 4},
                "teacher": {"width": 32, "depth": 2, "heads": 2}, "text": TINY_TEXT, "embed_dim": 32}
        for key, value in sections.items():
            merge = isinstance(value, dict) and "kind" not in value  # a new teacher kind replaces the section
            data[key] = {**data.get(key, {}), **value} if merge else value
        return InstAPConfig.model_validate(data).build()

    return make


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Any]]:
    """Factory: a batch in the trainer's contract with `instances` per sample, seeded."""

    def make(instances: tuple[int, ...] = (2, 1, 0), frames: int = 4, size: int = 64, crop: int = 32,
             length: int = 12) -> dict[str, Any]:
        g = torch.Generator().manual_seed(1)
        batch, count = len(instances), sum(instances)

        def text(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.randint(1000, 30000, (rows, length), generator=g)
            ids[:, 0] = 101
            lengths = torch.randint(4, length + 1, (rows, 1), generator=g)
            return ids, (torch.arange(length)[None] < lengths).long()

        text_ids, text_mask = text(batch)
        inst_ids, inst_mask = text(count)
        return {"video": torch.randn(batch, 3, frames, size, size, generator=g),
                "text_ids": text_ids, "text_mask": text_mask,
                "inst_crops": torch.randn(count, 3, frames, crop, crop, generator=g),
                "inst_text_ids": inst_ids, "inst_text_mask": inst_mask,
                "inst_sample_index": torch.repeat_interleave(torch.arange(batch), torch.tensor(instances)),
                "inst_boxes": torch.rand(count, frames, 4, generator=g),
                "inst_present": torch.ones(count, frames, dtype=torch.bool)}

    return make


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_video_vit_shapes_with_and_without_masking(pos_embed: str) -> None:
    vit = VisionConfig(width=64, depth=3, heads=4, pos_embed=pos_embed).build()
    video = torch.randn(2, 3, 4, 64, 64)
    full = vit(video, return_layers=2)
    assert full.tokens.shape == (2, 2 * 16, 64) and len(full.layers) == 2
    keep = torch.tensor([[0, 5, 17], [1, 2, 31]])
    masked = vit(video, keep)
    assert masked.tokens.shape == (2, 3, 64) and masked.layers == []
    crop = vit(torch.randn(5, 3, 2, 32, 48))  # other grids (crops, 1-tubelet clips) work too
    assert crop.tokens.shape == (5, 1 * 2 * 3, 64)


def test_video_vit_rejects_shapes_it_cannot_tokenise() -> None:
    vit = VisionConfig(width=64, depth=1, heads=4).build()
    with pytest.raises(ValueError, match="does not fit tubelet 2 and patch 16"):
        vit(torch.randn(1, 3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"must be \[B, 3, T, H, W\]"):
        vit(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="not divisible by vision.heads"):
        VisionConfig(width=64, heads=5)


def test_random_teacher_targets_line_up_with_student_tokens() -> None:
    teacher = RandomViTTeacher.Config(width=32, depth=3, heads=2, patch_size=8).build()
    out = teacher(torch.randn(2, 3, 4, 64, 64), num_layers=2, grid=(4, 4), tubelet_size=2)
    assert [f.shape for f in out.features] == [(2, 32, 32)] * 2  # resized to a 4x4 grid, 2 tubelets
    assert torch.allclose(out.features[0].norm(dim=-1), torch.ones(2, 32), atol=1e-5)
    assert out.attention.shape == (2, 2, 16)
    assert (out.attention >= 0).all() and (out.attention.sum(-1) <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="depth 3"):
        teacher(torch.randn(1, 3, 2, 64, 64), num_layers=4, grid=(4, 4), tubelet_size=2)


def test_random_teacher_weights_follow_its_seed() -> None:
    first, second = (RandomViTTeacher.Config(width=32, heads=2, seed=s).build() for s in (0, 0))
    assert torch.equal(first.patch_embed.weight, second.patch_embed.weight)


def test_clip_teacher_from_a_tiny_config() -> None:
    teacher = CLIPTeacher.Config(vision_config=TINY_CLIP).build()
    out = teacher(torch.randn(1, 3, 2, 64, 64), num_layers=2, grid=(4, 4), tubelet_size=1)
    assert [f.shape for f in out.features] == [(1, 32, 32)] * 2
    assert out.attention.shape == (1, 2, 16)


def test_clip_teacher_names_a_checkpoint_it_cannot_find(tmp_path) -> None:
    with pytest.raises(OSError, match="cannot load the CLIP teacher"):
        CLIPTeacher.Config(model=str(tmp_path / "missing")).build()


def test_text_encoder_pooling_and_freezing() -> None:
    ids, mask = torch.randint(1000, 2000, (3, 8)), torch.ones(3, 8, dtype=torch.long)
    encoder = TextConfig(**TINY_TEXT, freeze_layers=1).build()
    assert encoder(ids, mask).shape == (3, 32)
    assert not any(p.requires_grad for p in encoder.bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in encoder.bert.encoder.layer[1].parameters())
    mean = TextConfig(**TINY_TEXT, pooling="mean").build()
    mean.load_state_dict(encoder.state_dict())
    assert not torch.allclose(mean(ids, mask), encoder(ids, mask))
    frozen = TextConfig(**TINY_TEXT, trainable=False).build()
    assert not any(p.requires_grad for p in frozen.parameters())


def test_crops_attend_only_to_their_own_sample() -> None:
    torch.manual_seed(0)
    attn = GlobalLocalAttention(32, 4, InstanceConfig())
    crops, scene = torch.randn(3, 5, 32), torch.randn(2, 7, 32)
    index = torch.tensor([0, 1, 1])
    before = attn(crops, scene, index)
    scene[0] = torch.randn(7, 32)  # (a constant shift would vanish in the key/value LayerNorm)
    after = attn(crops, scene, index)
    assert before.shape == (3, 32)
    assert not torch.allclose(before[0], after[0]) and torch.allclose(before[1:], after[1:])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        attn(crops, scene, torch.tensor([0, 2, 1]))


def test_forward_backward_reaches_student_not_teacher(make_model, make_batch) -> None:
    model = make_model().train()
    out = model(make_batch())
    assert set(out) == {"loss", "l_rec", "l_glob", "l_inst", "temp_glob", "temp_inst"}
    assert all(torch.isfinite(v) for v in out.values()) and out["l_inst"] > 0
    w = model.cfg.loss
    assert out["loss"].item() == pytest.approx(
        (w.w_rec * out["l_rec"] + w.w_glob * out["l_glob"] + w.w_inst * out["l_inst"]).item(), rel=1e-5)
    out["loss"].backward()
    assert not model.teacher.training and all(p.grad is None for p in model.teacher.parameters())
    for module in (model.student.patch_embed, model.text_proj, model.instance_attn.blocks[0].q):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert model.temp_glob.log_value.grad.abs() > 0 and model.temp_inst.log_value.grad.abs() > 0
    trainable = {id(p) for p in model.student_parameters()}
    assert trainable and not trainable & {id(p) for p in model.teacher.parameters()}


def test_forward_with_no_instances(make_model, make_batch) -> None:
    model = make_model()
    out = model(make_batch(instances=(0, 0)))
    out["loss"].backward()
    assert out["l_inst"].item() == 0.0 and torch.isfinite(out["loss"])
    assert model.instance_attn.blocks[0].q.weight.grad is not None  # zero, but present for DDP


def test_instance_loss_off_and_shared_temperature(make_model, make_batch) -> None:
    off = make_model(loss={"inst_loss": False})
    assert off(make_batch())["l_inst"].item() == 0.0
    shared = make_model(loss={"inst_temperature": "shared"})
    out = shared(make_batch())
    assert shared.temp_inst is None and out["temp_inst"] == out["temp_glob"] and out["l_inst"] > 0


def test_encoders_return_normalised_embeddings(make_model, make_batch) -> None:
    model, batch = make_model().eval(), make_batch()
    with torch.no_grad():
        video = model.encode_video(batch["video"])
        text = model.encode_text(batch["text_ids"], batch["text_mask"])
        inst = model.encode_instances(batch["inst_crops"], batch["video"], batch["inst_sample_index"])
        scene = model.scene_tokens(batch["video"])
    assert video.shape == (3, 32) and text.shape == (3, 32) and inst.shape == (3, 32)
    assert scene.shape == (3, 32, 64)
    for emb in (video, text, inst):
        assert torch.allclose(emb.norm(dim=-1), torch.ones(len(emb)), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(make_model, make_batch) -> None:
    masking = {"sampling": "topk"}
    plain, checkpointed = make_model(masking=masking), make_model(masking=masking, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    batch = make_batch()
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(3)  # the same dropout draws in the text tower
        model(batch)["loss"].backward()
    assert torch.allclose(plain.student.blocks[0].attn.qkv.weight.grad,
                          checkpointed.student.blocks[0].attn.qkv.weight.grad, atol=1e-5)


def test_clip_teacher_in_the_model(make_model, make_batch) -> None:
    model = make_model(teacher={"kind": "clip_hf", "vision_config": TINY_CLIP}, vision={"tubelet_size": 1})
    out = model(make_batch(instances=(1, 1)))
    assert torch.isfinite(out["loss"]) and model.align_heads[0][1].out_features == 32


def test_config_rejects_impossible_alignment() -> None:
    with pytest.raises(ValueError, match="exceeds vision.depth"):
        InstAPConfig(loss={"align_layers": 3}, vision={"depth": 2})
    with pytest.raises(ValueError, match="exceeds teacher.depth"):
        InstAPConfig(loss={"align_layers": 2}, teacher={"kind": "vit_random", "depth": 1})
    with pytest.raises(ValueError, match="exceeds the teacher's depth"):
        InstAPConfig(loss={"align_layers": 2}, teacher={"kind": "clip_hf", "vision_config": {
            **TINY_CLIP, "num_hidden_layers": 1}}, text=TINY_TEXT).build()


def test_default_tiny_model_with_real_minilm(make_batch) -> None:
    cfg = InstAPConfig()
    tokenizer = load_tokenizer(cfg.text)
    assert type(tokenizer).__name__ == "BertTokenizer" and len(tokenizer) == 30522
    model = cfg.build()
    captions = ["a red cube slides left", "a blue ball bounces", "a green cone stands still"]
    tokens = tokenizer(captions, padding="max_length", truncation=True, max_length=cfg.text.max_len,
                       return_tensors="pt")
    assert tokens.input_ids[0, 0].item() == 101  # [CLS] of the BERT-uncased vocabulary
    batch = {**make_batch(), "text_ids": tokens.input_ids, "text_mask": tokens.attention_mask}
    batch["inst_text_ids"], batch["inst_text_mask"] = tokens.input_ids, tokens.attention_mask
    out = model(batch)
    out["loss"].backward()
    query = model.text.bert.encoder.layer[0].attention.self.query
    assert torch.isfinite(out["loss"]) and query.weight.grad is not None


def test_config_accepts_paper_sizes_and_batches_missing_fields_are_named(make_model) -> None:
    vit_l = {"img_size": 224, "num_frames": 16, "tubelet_size": 1, "patch_size": 16, "width": 1024,
             "depth": 24, "heads": 16, "drop_path": 0.2}
    teacher = {"kind": "clip_hf", "model": "openai/clip-vit-large-patch14"}
    cfg = InstAPConfig.model_validate({"vision": vit_l, "embed_dim": 768, "grad_checkpointing": True,
                                       "teacher": teacher, "loss": {"align_layers": 6},
                                       "instance": {"heads": 16}})
    assert isinstance(cfg.teacher, CLIPTeacher.Config) and cfg.vision.width == 1024
    assert InstAPConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # presets round-trip
    with pytest.raises(KeyError, match="lacks inst_crops"):
        make_model()({"video": torch.zeros(1, 3, 4, 64, 64), "text_ids": torch.zeros(1, 4, dtype=torch.long),
                      "text_mask": torch.ones(1, 4, dtype=torch.long)})


def test_instances_on_no_sampled_frame_take_no_part_in_the_instance_loss(make_model, make_batch) -> None:
    model = make_model().eval()
    batch = make_batch(instances=(2, 2, 1))
    absent = batch["inst_present"].clone()
    absent[1] = False  # its track lies outside the sampled frames: its crop would be background
    torch.manual_seed(0)
    with_absent = model(batch | {"inst_present": absent})["l_inst"]
    keep = torch.tensor([True, False, True, True, True])
    without = {k: v[keep] if k.startswith("inst_") else v for k, v in batch.items()}
    torch.manual_seed(0)
    assert torch.allclose(with_absent, model(without)["l_inst"], atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(with_absent, model(batch)["l_inst"], atol=1e-6)
    none_present = batch | {"inst_present": torch.zeros_like(absent)}
    assert model(none_present)["l_inst"] == 0.0


def _student_lengths(model: InstAP) -> list[int]:
    """Token counts entering the student's first block, one per student call (scene, then crops)."""
    lengths: list[int] = []
    model.student.blocks[0].register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[1]))
    return lengths


@pytest.mark.parametrize("tubelet", [1, 2])
def test_images_are_one_frame_clips_masked_at_the_image_ratio(make_model, make_batch,
                                                              tubelet: int) -> None:
    model = make_model(vision={"tubelet_size": tubelet, "num_frames": 4},
                       masking={"ratio": 0.75, "image_ratio": 0.5, "kind": "random"})
    lengths = _student_lengths(model)
    out = model(make_batch(frames=1))  # 64x64 at patch 16: 16 tokens per frame
    assert torch.isfinite(out["loss"])
    assert lengths[0] == 16 - int(16 * 0.5)  # one slot, image ratio
    assert lengths[1] == 4  # the crops of an image: one 32x32 frame, 4 tokens, unmasked
    lengths.clear()
    model(make_batch(frames=4))
    assert lengths[0] == (4 // tubelet) * (16 - int(16 * 0.75))  # video ratio
    out["loss"].backward()
    assert model.student.patch_embed.weight.grad is not None


def test_crop_masking_and_fewer_crop_frames_shrink_the_crop_tokens(make_model, make_batch) -> None:
    model = make_model(vision={"tubelet_size": 1}, instance={"crop_mask_ratio": 0.5})
    lengths = _student_lengths(model)
    batch = make_batch(frames=4)
    batch["inst_crops"] = batch["inst_crops"][:, :, :2]  # 2 crop frames of 4 scene frames
    assert torch.isfinite(model(batch)["loss"])
    per_frame = (32 // 16) ** 2
    assert lengths[1] == 2 * (per_frame - int(per_frame * 0.5))
    model.eval()
    lengths.clear()
    with torch.no_grad():
        model.encode_instances(batch["inst_crops"], batch["video"], batch["inst_sample_index"])
    assert lengths == [4 * 16, 2 * per_frame]  # evaluation sees every token


def test_learned_position_table_takes_images() -> None:
    vit = VisionConfig(img_size=32, num_frames=4, tubelet_size=2, width=32, depth=1, heads=2,
                       pos_embed="learned").build()
    out = vit(torch.randn(2, 3, 1, 32, 32))
    assert out.tokens.shape == (2, 4, 32)
