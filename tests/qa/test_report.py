"""QC report: edit distance, track IoU and the rates computed from a reviewed dataset."""

import json

import pytest

from instvl.datasets.layout import REVIEWS_FILE
from instvl.datasets.manifest import write_manifest
from instvl.datasets.reader import read_table
from instvl.datasets.writer import UnitWriter
from instvl.qa.convert import row_to_result
from instvl.qa.merge import Review, merge_review
from instvl.qa.report import ReportConfig, format_table, levenshtein, main, qc_report, track_iou
from instvl.testing.browser import dump_dom


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
                result = row_to_result(row) if row is first else edited
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
    assert [h for h in ("group", "accepted", "corrected", "box_iou", "caption_edits") if h not in rows[0]] == []
    overall = next(r for r in rows if "<td>all</td>" in r)
    cells = [c.split("</td>")[0] for c in overall.split("<td>")[1:]]
    assert cells[1:7] == ["4", "2", "0.500", "0.500", "0.000", "1.000"]  # rows .. box_iou
