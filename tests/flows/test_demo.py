"""`instvl demo`'s corpus: the demo preset finds the objects from pixels and its report shows them."""

import json

import numpy as np
import pytest

from instvl.config import load_config
from instvl.datasets.reader import read_table
from instvl.flows.demo import DemoConfig, build, check, make_media
from instvl.geometry import box_iou


def test_demo_media_under_a_path_with_quotes(tmp_path):
    output = tmp_path / "it's \"the\" demo"
    cfg = load_config(DemoConfig, "flows/demo", ["num_media=2"], values={"output": str(output)})
    media = make_media(cfg)
    assert media == output / "media" / "media" and len(list(media.iterdir())) == 2


@pytest.mark.slow
def test_demo_corpus_boxes_follow_the_objects(tmp_path):
    # A quote in the path: the demo passes paths to its configs as values, never inside YAML text.
    cfg = load_config(DemoConfig, "flows/demo", ["num_media=4", "renders=1"],
                      values={"output": str(tmp_path / "it's")})
    assert cfg.annotate_preset == "annotate/demo"
    media = make_media(cfg)
    corpus = build(cfg, media)
    check(cfg, corpus)
    truth = {r["sample_id"]: r for r in map(json.loads, (media.parent / "ground_truth.jsonl").open())}
    rows = read_table(corpus, columns=["source", "instances", "provenance"]).to_pylist()
    matched = total = 0
    for row in rows:
        models = {kv["key"]: kv["value"] for kv in row["provenance"]["models"]}
        assert models["random_init"] == "false" and models["detector"] == "pixels"
        record = next(r for r in truth.values() if row["source"]["uri"].endswith(r["file"]))
        for gt in record["instances"]:
            for frame, box in zip(gt["frame_index"], gt["box"], strict=True):
                predicted = [b for inst in row["instances"]
                             for f, b in zip(inst["trajectory"]["frame_index"], inst["trajectory"]["box"],
                                             strict=True) if f == frame]
                if not predicted:
                    continue
                total += 1
                matched += bool(box_iou(np.array([box]), np.array(predicted)).max() >= 0.5)
    assert total and matched / total >= 0.5, (matched, total)
    page = (corpus / "report.html").read_text()
    assert "RANDOM WEIGHTS" not in page and "detector: pixels" in page
