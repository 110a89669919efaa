"""What `qa push` selects: the reasons annotation stored, or a fresh routing only when asked (no server)."""

from pathlib import Path

from instvl.qa.push import PushConfig, select_rows
from instvl.testing.datasets import make_sample, write_dataset

STORED = {"s-00000": ["low_instance_score: instance 0 scored 0.10 < 0.35"], "s-00001": [], "s-00002": []}
STRICT = {"min_caption_words": 50, "audit_fraction": 0.0}
"""QA thresholds under which every sample's captions are too short: routing would send all of them."""


def routed_dataset(root: Path) -> Path:
    """Three samples as annotation left them: one routed, one not, one already reviewed."""
    def store(_: int, row: dict) -> None:
        row["qc"]["route_reasons"] = STORED[row["sample_id"]]

    samples = [make_sample(0), make_sample(1), make_sample(2, status="accepted")]
    return write_dataset(root, samples, mutate=store)


def selected(root: Path, **push: object) -> dict[str, list[str]]:
    cfg = PushConfig(root=str(root), routing=STRICT, push=push)
    return {row["sample_id"]: row["route_reasons"] for row in select_rows(root, cfg)}


def test_push_sends_the_reasons_annotation_stored(tmp_path):
    root = routed_dataset(tmp_path / "ds")
    assert selected(root) == {"s-00000": STORED["s-00000"]}  # not what the strict QA thresholds would say
    assert selected(root, select="all") == {"s-00000": STORED["s-00000"], "s-00001": []}


def test_reroute_applies_the_qa_thresholds_instead(tmp_path):
    root = routed_dataset(tmp_path / "ds")
    rerouted = selected(root, reroute=True)
    assert sorted(rerouted) == ["s-00000", "s-00001"]  # the reviewed sample stays out
    for reasons in rerouted.values():
        assert reasons and all(r.startswith("short_caption") for r in reasons), reasons
