"""A reviewer's view in headless Chromium, logged in to the real Label Studio server.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`, no extra package):
log in through the login form, open a pushed task, play the clip to a middle frame and ask the labeling
store which boxes it draws there. F3 of the QC audit: strided tracks showed on 8 of 46 frames.
"""

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from instvl.geometry import boxes_at
from instvl.qa.push import PushConfig, push_dataset
from instvl.testing.datasets import make_sample, write_dataset
from instvl.testing.labelstudio import TEST_PASSWORD, TEST_USER

pytestmark = pytest.mark.browser


class DevTools:
    """A minimal DevTools client over Chromium's pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, chromium: str, profile: Path):
        reader, self._out = os.pipe()
        self._in, writer = os.pipe()
        # Above any descriptor the child will use, so that placing them at 3 and 4 clobbers neither.
        to_child, from_child = (fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (reader, writer))
        os.close(reader)
        os.close(writer)

        def wire() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4, to_child, from_child), preexec_fn=wire, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._next = b"", 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "Chromium closed its DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                assert "error" not in reply, reply["error"]
                return reply.get("result") or {}

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        os.close(self._in)
        os.close(self._out)


def session_cookies(url: str) -> dict[str, str]:
    """Log in through the login form as a person does; returns the session cookies."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as http:
        http.get("/user/login/")
        token = http.cookies["csrftoken"]
        answer = http.post("/user/login/", data={"email": TEST_USER, "password": TEST_PASSWORD,
                                                 "csrfmiddlewaretoken": token},
                           headers={"Referer": f"{url}/user/login/"})
        assert answer.status_code == 302, answer.text[:300]
        return {name: value for name, value in http.cookies.items()}


# The labeling store (window.Htx) of Label Studio 1.23: the selected annotation, its video tag and regions.
ANNOTATION = "Htx.annotationStore.selected"
VIDEO = f"{ANNOTATION}.names.get('video')"
DRAWN = f"""(() => {{
  const video = {VIDEO}, frame = video.frame;
  return {{frame, length: video.length,
          tracks: {ANNOTATION}.regions.filter(r => r.type === 'videorectangleregion').map(r => {{
            const shape = r.isInLifespan(frame) ? r.getShape(frame) : null;
            return [r.id.split('#')[0], shape && [shape.x, shape.y, shape.width, shape.height]];
          }})}};
}})()"""
BOXES = f"""{ANNOTATION}.regions.filter(r => r.type === 'rectangleregion')
  .map(r => [r.id.split('#')[0], [r.x, r.y, r.width, r.height]])"""


def open_task(browser: DevTools, url: str, project_id: int, task_id: int) -> None:
    browser.send("Page.navigate", {"url": f"{url}/projects/{project_id}/data?task={task_id}"})
    browser.wait_for(f"!!(window.Htx && Htx.annotationStore && {ANNOTATION}) && "
                     f"{ANNOTATION}.regions.length > 0", timeout_s=90)


@pytest.fixture
def browser(chromium_bin, tmp_path, ls_server):
    devtools = DevTools(chromium_bin, tmp_path / "profile")
    target = devtools.send("Target.createTarget", {"url": "about:blank"}, session=False)
    devtools.session = devtools.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                               "flatten": True}, session=False)["sessionId"]
    for name, value in session_cookies(ls_server.url).items():
        devtools.send("Network.setCookie", {"name": name, "value": value, "url": ls_server.url})
    devtools.send("Runtime.enable")
    yield devtools
    devtools.close()


def percent(box: list[float]) -> list[float]:
    return [box[0] * 100, box[1] * 100, (box[2] - box[0]) * 100, (box[3] - box[1]) * 100]


def test_every_track_is_drawn_at_a_middle_frame(browser, ls_server, qa_settings, tmp_path_factory, request):
    """F3: boxes of strided tracks showed only on their keyframes; the 128-pixel clip was a stamp."""
    base = tmp_path_factory.getbasetemp() / "datasets" / request.node.name
    video = make_sample(0, num_instances=3, num_frames=48, width=96, height=64, keyframe_every=6,
                        with_media=True)
    image = make_sample(1, media_type="image", num_instances=2, with_media=True)
    root = write_dataset(base / "ds", [video, image])
    sections = qa_settings(push={"select": "all"})
    summary = push_dataset(PushConfig(root=str(root), **sections))
    client = PushConfig(root=str(root), **sections).server.build()
    tasks = {title: client.tasks(pid, fields="task_only")[0]["id"] for title, pid in summary.projects.items()}
    title = next(t for t in tasks if "video" in t)

    open_task(browser, ls_server.url, summary.projects[title], tasks[title])
    browser.wait_for(f"{VIDEO}.length === 48 && !!{VIDEO}.ref.current", timeout_s=60)
    size = browser.evaluate("(() => { const v = document.querySelector('video');"
                            " return [v.videoWidth, v.videoHeight]; })()")
    assert size == [720, 480]  # scaled up for review (push.review_height) from 96x64
    browser.evaluate(f"{VIDEO}.ref.current.play()")  # play, and stop once past a quarter of the clip
    browser.wait_for(f"{VIDEO}.frame >= 12", timeout_s=30)
    browser.evaluate(f"{VIDEO}.ref.current.pause()")
    paused = browser.evaluate(DRAWN)
    assert paused["length"] == 48 and 12 <= paused["frame"] <= 40, paused
    browser.evaluate(f"{VIDEO}.setFrame(27)")  # and a frame between two keyframes (clip frames 24, 30)
    between = browser.wait_for(f"{VIDEO}.frame === 27 && {DRAWN}")
    truth = {f"i{inst.instance_id}": inst.trajectory for inst in video.instances}
    for state in (paused, between):
        frame = state["frame"]
        assert sorted(name for name, _ in state["tracks"]) == sorted(truth)
        for name, shape in state["tracks"]:
            assert shape is not None, f"track {name} not drawn at frame {frame}: {state}"
            traj = truth[name]
            expected = percent(boxes_at(traj.frame_index, traj.box, [frame - 1], mode="interpolate")[0][0])
            assert shape == pytest.approx(expected, abs=0.5), (name, frame)

    # The verdict is required: without accept/reject the annotation does not validate (Submit refuses).
    assert browser.evaluate(f"{ANNOTATION}.validate()") is False
    browser.evaluate(f"{ANNOTATION}.names.get('verdict').children[0].setSelected(true)")
    assert browser.evaluate(f"{ANNOTATION}.validate()") is True

    title = next(t for t in tasks if "image" in t)
    open_task(browser, ls_server.url, summary.projects[title], tasks[title])
    drawn = dict(browser.wait_for(BOXES))
    assert sorted(drawn) == ["i0", "i1"]
    for inst in image.instances:
        assert drawn[f"i{inst.instance_id}"] == pytest.approx(percent(inst.trajectory.box[0]), abs=0.5)
