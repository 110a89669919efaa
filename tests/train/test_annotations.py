"""Annotation lists (JSON, JSONL, CSV of media and captions) and zero-shot retrieval with several captions."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("av")

from instvl.train.annotations import (  # noqa: E402
    AnnotationError,
    caption_targets,
    multi_caption_retrieval,
    read_annotations,
)


def test_json_list_merges_captions_of_the_same_media_and_resolves_paths(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps([
        {"video": "a.mp4", "caption": "a dog runs"},
        {"video": "a.mp4", "caption": ["the dog is fast", "running dog"]},
        {"image": "https://example.com/b.png", "caption": "a cat"},
        {"media": "c.jpg", "text": "a bird"},
    ], indent=1))
    entries = read_annotations(path, media_root="/data")
    assert [e.media for e in entries] == ["a.mp4", "https://example.com/b.png", "c.jpg"]
    assert entries[0].captions == ["a dog runs", "the dog is fast", "running dog"]
    assert entries[0].uri == "/data/a.mp4" and entries[1].uri == "https://example.com/b.png"
    assert [e.media_type for e in entries] == ["video", "image", "image"]
    texts, owners = caption_targets(entries)
    assert len(texts) == 5 and owners == [0, 0, 0, 1, 2]


def test_csv_and_jsonl_lists(tmp_path: Path) -> None:
    csv_path = tmp_path / "msrvtt.csv"
    csv_path.write_text("video_id,video,sentence\n1,v1.mp4,a man sings\n2,v2.mp4,a car\n1,v1.mp4,singing\n")
    entries = read_annotations(csv_path)
    assert [(e.media, e.captions, e.line) for e in entries] == [("v1.mp4", ["a man sings", "singing"], 2),
                                                                ("v2.mp4", ["a car"], 3)]
    assert entries[0].uri == str(tmp_path / "v1.mp4")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text('{"path": "x.mp4", "caption": "one"}\n\n{"path": "y.png", "caption": "two"}\n')
    assert [e.media_type for e in read_annotations(jsonl)] == ["video", "image"]


@pytest.mark.parametrize(("name", "text", "where", "reason"), [
    ("bad.json", '[\n {"video": "a.mp4", "caption": "x"},\n {"video": "b.mp4"}\n]', "bad.json:3",
     "no caption"),
    ("bad.json", '[\n {"video": "a.mp4", "caption": "x"},\n {"video": "b.mp4", "caption": }\n]', "bad.json:3",
     "invalid JSON"),
    ("bad.json", '{"video": "a.mp4"}', "bad.json:1", "must be a list"),
    ("bad.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"caption": "y"}\n', "bad.jsonl:2", "no media field"),
    ("bad.jsonl", '{"video": "a.mp4", "caption": ""}\n', "bad.jsonl:1", "non-empty string"),
    ("bad.csv", "video,caption\na.mp4,x\nb.mp4,y,extra\n", "bad.csv:3", "more fields"),
])
def test_bad_lines_name_the_file_and_line(tmp_path: Path, name: str, text: str, where: str,
                                          reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AnnotationError, match=reason) as err:
        read_annotations(path)
    assert where in str(err.value)


def test_other_extensions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a.mp4 a dog")
    with pytest.raises(AnnotationError, match="not an annotation list"):
        read_annotations(path)


def test_retrieval_with_several_captions_per_video() -> None:
    video = torch.eye(3)
    owners = [0, 0, 1, 2, 2]  # captions 0-1 describe video 0, caption 2 video 1, captions 3-4 video 2
    # captions 1 and 3 point (weakly) at the wrong video; the others at their own
    text = torch.stack([video[0], 0.5 * video[1], video[1], 0.5 * video[0], video[2]])
    report = multi_caption_retrieval(text, video, owners)
    assert report["t2v_r1"] == pytest.approx(60.0)  # captions 0, 2 and 4 find their video first
    # video 2's best caption is its own caption 4, although its caption 3 points elsewhere: a hit
    assert report["v2t_r1"] == pytest.approx(100.0)
    assert report["num_texts"] == 5 and report["num_videos"] == 3
    wrong = multi_caption_retrieval(text, video, [1, 0, 1, 2, 2])  # caption 0 now belongs to video 1
    assert wrong["v2t_r1"] == pytest.approx(200 / 3)  # video 0's best caption (0) is not its own


def test_zero_shot_eval_on_an_annotation_list(tmp_path: Path) -> None:
    from instvl.testing.media import moving_square, png_bytes, write_mp4
    from instvl.train.config import EvalConfig
    from instvl.train.evaluate import evaluate

    items = []
    for i in range(3):
        frames, _ = moving_square(8, 64, 48, seed=i)
        write_mp4(tmp_path / f"v{i}.mp4", frames)
        items += [{"video": f"v{i}.mp4", "caption": f"clip {i}"},
                  {"video": f"v{i}.mp4", "caption": f"again {i}"}]
    (tmp_path / "img.png").write_bytes(png_bytes(np.full((40, 50, 3), 90, np.uint8)))
    items.append({"image": "img.png", "caption": "a grey picture"})
    (tmp_path / "list.json").write_text(json.dumps(items))
    cfg = EvalConfig.model_validate({
        "model": {"text": {"random_config": {"hidden_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2, "intermediate_size": 64}},
                  "embed_dim": 16},
        "data": {"root": str(tmp_path / "unused"), "img_size": 64, "crop_size": 32, "batch_size": 2},
        "eval": {"annotations": str(tmp_path / "list.json")},
        "run": {"output_dir": str(tmp_path / "run"), "device": "cpu"}, "num_examples": 0})
    report = evaluate(cfg)
    assert report["num_videos"] == 4 and report["num_captions"] == 7
    zero_shot = report["zero_shot"]
    assert zero_shot["num_texts"] == 7 and zero_shot["num_videos"] == 4
    assert 0 <= zero_shot["mean_recall"] <= 100
    assert json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["zero_shot"] == zero_shot
