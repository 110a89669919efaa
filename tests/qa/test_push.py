"""What `qa push` selects (the reasons annotation stored, or a fresh routing only when asked), and that a lost
import answer never duplicates a task (a lossy proxy in front of the real server)."""

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from instvl.media.decode import iter_pyav_frames
from instvl.media.fetch import sha256_of
from instvl.qa.confinement import review_folder
from instvl.qa.push import PushConfig, path_dataset_id, push_dataset, select_rows, task_for, write_media
from instvl.testing.datasets import COLOURS, make_sample, write_dataset
from instvl.testing.media import paint_boxes, write_mp4

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


def with_sources(tmp_path: Path) -> Path:
    """Two 64x48 stored clips: s-00000 made from a 256x192 source file beside the dataset, s-00001 from a
    source that is gone."""
    sample = make_sample(0, with_media=True)
    boxes = np.stack([np.asarray(inst.trajectory.box) for inst in sample.instances], axis=1)
    source = write_mp4(tmp_path / "sources" / "clip-0.mp4", paint_boxes(boxes, 256, 192, list(COLOURS[:2])))
    samples = [dataclasses.replace(sample, uri=str(source), sha256=sha256_of(str(source))),
               make_sample(1, with_media=True)]  # file:///data/clip-1.mp4
    return write_dataset(tmp_path / "ds", samples)


def staged_heights(root: Path, review_dir: Path, **push: object) -> dict[str, tuple[str, str, int]]:
    """sample id -> (staged file name, where it came from, its height) after `write_media`."""
    cfg = PushConfig(root=str(root), push={"select": "all", "review_height": 96, **push})
    rows = {row["sample_id"]: row for row in select_rows(root, cfg)}
    staged = write_media(root, rows, review_dir, cfg.push)
    for path, _ in staged.values():
        assert path.parent == review_dir and not path.is_symlink()
        assert path.stat().st_ino == (root / "media" / path.name).stat().st_ino  # linked, not written there
    return {sid: (path.name, origin, next(iter_pyav_frames(str(path), path.name))[1].height)
            for sid, (path, origin) in staged.items()}


def test_push_stages_review_media_from_the_source_where_it_can(tmp_path, caplog):
    root = with_sources(tmp_path)
    review_dir = review_folder(tmp_path / "review-media", root)
    caplog.set_level(logging.WARNING)
    assert staged_heights(root, review_dir) == {"s-00000": ("s-00000.source96.mp4", "source", 96),
                                                "s-00001": ("s-00001.mp4", "stored", 96)}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["sample s-00001"]
    task = task_for({"sample_id": "s-00000", "media_type": "video", "route_reasons": [], "fingerprint": "f"},
                    review_dir / "s-00000.source96.mp4",
                    {"document_root": tmp_path / "review-media", "dataset_id": "d"})
    assert task["data"]["video"] == f"/data/local-files/?d={review_dir.name}/s-00000.source96.mp4"


def test_push_with_stored_review_media_keeps_the_rows_media(tmp_path, caplog):
    root = with_sources(tmp_path)
    caplog.set_level(logging.WARNING)
    staged = staged_heights(root, review_folder(tmp_path / "review-media", root), review_media="stored")
    assert staged == {"s-00000": ("s-00000.mp4", "stored", 96), "s-00001": ("s-00001.mp4", "stored", 96)}
    assert not caplog.records  # no source is looked at


class LossyProxy:
    """A proxy on 127.0.0.1 in front of the real server that loses the answers to the first imports.

    mode "drop": the import reaches the server, then the connection is closed without an answer;
    mode "stall": the answer is held past the client's timeout. Either way the tasks exist on the server.
    """

    def __init__(self, target: str, mode: str, lose: int = 1, stall_s: float = 4.0):
        import http.server
        import threading

        import httpx

        self.imports, proxy = 0, self
        upstream = httpx.Client(base_url=target, timeout=60)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                skip = ("host", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = upstream.request(self.command, self.path, headers=headers, content=body)
                if self.command == "POST" and self.path.split("?")[0].endswith("/import"):
                    proxy.imports += 1
                    if proxy.imports <= lose:
                        if mode == "stall":
                            time.sleep(stall_s)
                        self.close_connection = True
                        return  # the server made the tasks; the client never hears of it
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "content-encoding", "transfer-encoding",
                                           "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._upstream = upstream

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._upstream.close()


@pytest.mark.parametrize("mode", ["drop", "stall"])
def test_a_lost_import_answer_never_duplicates_a_task(mode, ls_server, qa_settings, tmp_path_factory,
                                                      request):
    """Issue 14 item 4: retrying an import whose answer was lost used to create the tasks twice."""
    root = write_dataset(tmp_path_factory.getbasetemp() / "datasets" / request.node.name,
                         [make_sample(i, with_media=True) for i in range(3)])
    proxy = LossyProxy(ls_server.url, mode)
    try:
        sections = qa_settings(push={"select": "all", "batch_size": 2})
        sections["server"] = {**sections["server"], "url": proxy.url, "timeout_s": 2}
        summary = push_dataset(PushConfig(root=str(root), **sections))
    finally:
        proxy.close()
    assert (summary.pushed, summary.already_there) == (3, 0)
    assert proxy.imports == 2  # the lost batch was found by key, not sent again
    client = PushConfig(root=str(root), **qa_settings()).server.build()
    index = client.task_ids_by_key(summary.projects[next(iter(summary.projects))])
    ours = {key: ids for key, ids in index.items() if key[0] == path_dataset_id(root)}
    assert sorted(sid for _, sid, _ in ours) == ["s-00000", "s-00001", "s-00002"]
    assert all(len(ids) == 1 for ids in ours.values())
