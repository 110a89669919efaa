"""Review routing: each reason fires on the case it names, clean samples pass, audits are deterministic."""

import pytest

from instvl.qa.routing import (
    RoutingConfig,
    audit_draw,
    reason_code,
    route_row,
    route_rows,
    with_route_reasons,
)


@pytest.fixture
def make_row():
    """Factory: a clean video row with two distinct, well-scored instances, overridable per field."""

    def make(media_type="video", instances=None, global_caption="two objects cross a sunny street", **fields):
        def inst(iid, phrase, caption, frames=(0, 1, 2, 3), score=0.9, frame_scores=None):
            frames = list(frames)
            return {"instance_id": iid, "phrase": phrase, "caption": caption, "score": score,
                    "trajectory": {"frame_index": frames, "box": [[0.1, 0.1, 0.3, 0.3]] * len(frames),
                                   "mask_rle": [], "score": frame_scores or [0.9] * len(frames)}}

        if instances is None:
            instances = [inst(0, "red ball", "a red ball rolling to the left"),
                         inst(1, "blue cube", "a small blue cube sliding down")]
        elif callable(instances):
            instances = instances(inst)
        return {"sample_id": fields.pop("sample_id", "s-1"), "media_type": media_type,
                "global_caption": global_caption, "instances": instances, "qc": {"status": "auto"}, **fields}

    return make


NO_AUDIT = RoutingConfig(audit_fraction=0.0)


def codes(row, cfg=NO_AUDIT):
    return {reason_code(r) for r in route_row(row, cfg)}


def test_clean_sample_is_not_routed(make_row):
    assert route_row(make_row(), NO_AUDIT) == []


@pytest.mark.parametrize(("instances", "expected"), [
    (lambda inst: [inst(0, "red ball", "a red ball rolling left", frames=range(12), score=0.1)],
     "low_instance_score"),
    (lambda inst: [inst(0, "red ball", "a red ball rolling left", frames=range(6), score=0.38)],
     "weak_short_track"),
    (lambda inst: [inst(0, "red ball", "a red ball rolling left", frames=[3])], "short_track"),
    (lambda inst: [inst(0, "red ball", "a red ball rolling left", frames=[0, 1, 5, 6, 10, 11, 12])],
     "fragmented_track"),
    (lambda inst: [inst(0, "red ball", "ball")], "short_caption"),
    (lambda inst: [inst(0, "red ball", "red ball ball ball ball ball")], "repeated_words"),
    (lambda inst: [inst(0, "red ball", "a shiny thing rolling away")], "phrase_not_mentioned"),
    (lambda inst: [inst(0, "red ball", "a red ball rolling left"),
                   inst(1, "red ball", "A red ball, rolling left")],
     "duplicate_caption"),
    ([], "no_instances"),
])
def test_each_problem_is_routed_with_its_reason(make_row, instances, expected):
    assert codes(make_row(instances=instances)) == {expected}


def test_global_caption_and_thresholds_are_configurable(make_row):
    assert codes(make_row(global_caption="street")) == {"short_caption"}
    lenient = RoutingConfig(audit_fraction=0, min_caption_words=1)
    assert codes(make_row(global_caption="street"), lenient) == set()
    one_gap = make_row(instances=lambda inst: [inst(0, "red ball", "a red ball rolling left",
                                                    frames=[0, 1, 5])])
    assert codes(one_gap) == set()
    assert codes(one_gap, RoutingConfig(audit_fraction=0, max_track_gaps=0)) == {"fragmented_track"}
    unsure = make_row(instances=lambda inst: [inst(0, "red ball", "a red ball rolling left",
                                                   frame_scores=[0.9, 0.01, 0.9, 0.9])])
    assert codes(unsure) == set()  # off by default
    assert codes(unsure, RoutingConfig(audit_fraction=0, min_frame_score=0.05)) == {"low_frame_score"}


def test_sampled_frames_are_not_gaps(make_row):
    strided = make_row(instances=lambda inst: [inst(0, "red ball", "a red ball rolling left",
                                                    frames=[0, 2, 4, 6, 8, 10])])
    assert codes(strided, RoutingConfig(audit_fraction=0, max_track_gaps=0)) == set()
    lost = make_row(instances=lambda inst: [inst(0, "red ball", "a red ball rolling left",
                                                 frames=[0, 2, 4, 10, 12])])
    assert codes(lost, RoutingConfig(audit_fraction=0, max_track_gaps=0)) == {"fragmented_track"}


def test_images_are_not_judged_by_track_length(make_row):
    image = make_row(media_type="image", instances=lambda inst: [inst(0, "red ball", "a red ball on grass",
                                                                      frames=[0])])
    assert codes(image) == set()


def test_audit_share_is_deterministic_and_close_to_the_fraction(make_row):
    cfg = RoutingConfig(audit_fraction=0.2, seed=7)
    rows = [make_row(sample_id=f"s-{k}") for k in range(2000)]
    first, second = route_rows(rows, cfg), route_rows(rows, cfg)
    audited = {sid for sid, reasons in first.items() if reasons}
    assert first == second
    assert all(reason_code(r) == "audit" for sid in audited for r in first[sid])
    assert 0.17 < len(audited) / len(rows) < 0.23
    other_seed = {sid for sid, r in route_rows(rows, RoutingConfig(audit_fraction=0.2, seed=8)).items() if r}
    assert audited != other_seed
    assert 0 <= audit_draw("s-1", 0) < 1 and audit_draw("s-1", 0) == audit_draw("s-1", 0)


def test_reasons_are_recorded_in_qc(make_row):
    row = make_row()
    updated = with_route_reasons(row, ["audit: random 5% quality sample"])
    assert updated["qc"] == {"status": "auto", "route_reasons": ["audit: random 5% quality sample"]}
    assert "route_reasons" not in row["qc"]
