"""QC report: edit distance, track IoU and the rates computed from a reviewed dataset."""

import json

import pytest

from instvl.datasets.layout import REVIEWS_FILE
from instvl.datasets.manifest import write_manifest
from instvl.datasets.reader import read_table
from instvl.datasets.writer import UnitWriter
from instvl.qa.convert import row_to_result
from instvl.qa.merge import Review, merge_review
from instvl.qa.report import ReportConfig, format_table, levenshtein, main, qc_report, track_iou, wilson
from instvl.testing.browser import dump_dom
from instvl.testing.datasets import PHRASES, make_sample, write_dataset
from instvl.testing.labelstudio import verdict


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("same", "same", 0)])
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_track_iou_counts_missing_frames_as_zero():
    box = [0.0, 0.0, 0.5, 0.5]
    assert track_iou([0, 1], [box, box], [0, 1], [box, box]) == pytest.approx(1.0)
    assert track_iou([0, 1], [box, box], [0], [box]) == pytest.approx(0.5)
    assert track_iou([0], [box], [0], [[0.25, 0.0, 0.75, 0.5]]) == pytest.approx(1 / 3)


@pytest.fixture
def reviewed(make_synth, tmp_path):
    """A merged dataset: one sample accepted as predicted, one with an instance caption edited."""
    rows = read_table(make_synth(num_samples=4, seed=5)).to_pylist()
    reviewed = [r for r in rows if r["instances"]][:2]
    first, second = reviewed
    edited = row_to_result(second)
    caption = next(i for i in edited if i["from_name"] == "inst_caption")
    caption["value"]["text"] = [caption["value"]["text"][0] + "!!"]
    out, entries = tmp_path / "out", []
    with UnitWriter(out, "shard-00000") as writer:
        for row in rows:
            if row is first or row is second:
                result = (row_to_result(row) if row is first else edited) + [verdict("accept", "video")]
                row, entry = merge_review(row, Review(row["sample_id"], 1, result, "r", None), 0.005)
                entries.append(entry)
            writer.write(row)
    write_manifest(out)
    (out / REVIEWS_FILE).parent.mkdir()
    (out / REVIEWS_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))
    return out, first, second


def test_report_rates_iou_and_edits_per_group(reviewed, tmp_path, capsys):
    out, first, second = reviewed
    report = {r["group"]: r for r in qc_report(out)}
    overall = report["all"]
    assert (overall["rows"], overall["reviewed"]) == (4, 2)
    assert overall["accepted"] == pytest.approx(0.5) and overall["corrected"] == pytest.approx(0.5)
    assert overall["box_iou"] == pytest.approx(1.0)
    n_instances = len(first["instances"]) + len(second["instances"])
    assert overall["caption_edits"] == pytest.approx(2 / n_instances)
    assert any(g.startswith("backend ") for g in report) and any(g.startswith("phrase ") for g in report)
    assert "caption_edits" in format_table(list(report.values()))
    assert main(ReportConfig(root=str(out), html=str(tmp_path / "r.html"))) == 0
    assert "accepted" in capsys.readouterr().out and "<table>" in (tmp_path / "r.html").read_text()


@pytest.mark.browser
@pytest.mark.usefixtures("chromium_bin")
def test_html_report_shows_the_rates_in_a_browser(reviewed, tmp_path):
    out, _first, _second = reviewed
    assert main(ReportConfig(root=str(out), html=str(tmp_path / "qc.html"))) == 0
    dom = dump_dom(tmp_path / "qc.html", tmp_path / "profile")
    assert "<title>instvl QC report</title>" in dom and f"QC report of {out}" in dom
    table = dom[dom.index("<table>"):dom.index("</table>")]
    rows = [r for r in table.split("<tr>")[1:]]
    headers = ("group", "accepted", "corrected", "error_ci95", "box_iou", "caption_edits")
    assert [h for h in headers if h not in rows[0]] == []
    overall = next(r for r in rows if "<td>all</td>" in r)
    cells = [c.split("</td>")[0] for c in overall.split("<td>")[1:]]
    # rows, reviewed, accepted, corrected, rejected, error, then box_iou
    assert cells[1:7] + cells[8:9] == ["4", "2", "0.500", "0.500", "0.000", "0.500", "1.000"]


def test_densifying_a_track_without_moving_it_keeps_iou_one():
    """R3: a reviewer switching interpolation on gave IoU 0.22 for an unmoved track."""
    keys = [[0.1, 0.1, 0.3, 0.3], [0.3, 0.1, 0.5, 0.3], [0.5, 0.1, 0.7, 0.3]]
    dense = [[0.1 + 0.1 * k, 0.1, 0.3 + 0.1 * k, 0.3] for k in range(5)]
    assert track_iou([0, 2, 4], keys, [0, 1, 2, 3, 4], dense) == pytest.approx(1.0)


def test_wilson_interval():
    assert wilson(0, 0) is None
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))


def test_audit_share_reasons_reviewers_and_instance_verdicts(tmp_path):
    """Item 5 of issue 14, and R1/R2: rejected instances counted per phrase, each instance its own verdict."""
    plan = {  # sample: (route reasons, reviewer, verdict, move instance 0)
        "s-00000": (["audit: random 5% quality sample"], "a@x", "accept", False),
        "s-00001": (["audit: random 5% quality sample", "short_track: instance 0"], "b@x", "reject", False),
        "s-00002": (["short_track: instance 1 has 1 box(es) < 2"], "a@x", "accept", True),
        "s-00003": (["low_instance_score: instance 0 scored 0.10 < 0.35"], "b@x", "accept", False),
    }
    samples = [make_sample(i) for i in range(5)]
    root = write_dataset(tmp_path / "v1", samples)
    out, entries = tmp_path / "v2", []
    with UnitWriter(out, "shard-00000") as writer:
        for row in read_table(root).to_pylist():
            if row["sample_id"] in plan:
                reasons, reviewer, choice, move = plan[row["sample_id"]]
                result = row_to_result(row)
                if move:
                    result[0]["value"]["sequence"][0]["x"] += 10
                review = Review(row["sample_id"], 1, result + [verdict(choice, "video")], reviewer, None)
                row, entry = merge_review(row, review, 0.005, reasons)
                entries.append(entry)
            writer.write(row)
    write_manifest(out)
    (out / REVIEWS_FILE).parent.mkdir()
    (out / REVIEWS_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))

    report = {r["group"]: r for r in qc_report(out)}
    audit, routed = report["audit (random share)"], report["routed"]
    assert (audit["reviewed"], audit["error"], audit["error_ci95"]) == (2, 0.5, wilson(1, 2))
    assert (routed["reviewed"], routed["error"]) == (3, pytest.approx(2 / 3))
    assert report["reason short_track"]["error"] == 1.0  # precision: both of its samples needed a fix
    assert report["reason low_instance_score"]["error"] == 0.0
    assert report["reason audit"]["reviewed"] == 2
    assert report["reviewer a@x"]["corrected"] == 0.5 and report["reviewer b@x"]["rejected"] == 0.5
    first, second = (f"phrase {p}" for p in PHRASES[:2])
    assert report[first]["rejected"] == 0.25 and report[first]["corrected"] == 0.25
    assert report[second]["rejected"] == 0.25 and report[second]["corrected"] == 0.0
    assert report["all"]["rows"] == 5 and report["all"]["reviewed"] == 4
    names = list(report)
    assert names[:3] == ["all", "audit (random share)", "routed"]
