"""The real server's exposure: an invited, non-admin reviewer cannot reach files outside the review-media
root; the data dir, template cache and media root are private; the server answers on loopback only."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from instvl.datasets.synth import SynthConfig, generate
from instvl.qa.client import ClientConfig
from instvl.qa.push import PushConfig, push_dataset
from instvl.qa.server import LabelStudioServer
from instvl.testing.labelstudio import TOKEN_ENV

REVIEWER, REVIEWER_PASSWORD = "reviewer@instvl.test", "reviewer-password-42"


@pytest.fixture(scope="module")
def reviewer(ls_server: LabelStudioServer) -> Iterator[httpx.Client]:
    """A browser-like session of an ordinary member (not the admin, not a superuser: signup makes plain
    users) who joined through the organisation's invite link."""
    admin = ClientConfig(url=ls_server.url, token_env=TOKEN_ENV).build()
    invite = admin.request("GET", "/api/invite")["invite_url"]
    web = httpx.Client(base_url=ls_server.url, timeout=30)
    web.get(invite)
    signup = web.post(invite, data={"email": REVIEWER, "password": REVIEWER_PASSWORD,
                                    "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert signup.status_code == 302, signup.text[:500]
    web.headers["X-CSRFToken"] = web.cookies["csrftoken"]
    me = web.get("/api/current-user/whoami").json()
    assert me["email"] == REVIEWER
    admin.close()
    yield web
    web.close()


def add_storage(web: httpx.Client, project_id: int, path: Path | str) -> httpx.Response:
    return web.post("/api/storages/localfiles", json={"project": project_id, "path": str(path),
                                                      "title": "mine", "use_blob_urls": True})


def test_a_reviewer_cannot_read_files_outside_the_review_media_root(ls_server, reviewer, qa_settings,
                                                                     tmp_path):
    root = tmp_path / "corpus"  # outside the review-media root, as datasets are
    generate(SynthConfig(output=str(root), num_samples=2, seed=3, image_fraction=0.5, num_frames=(6, 9)))
    pushed = push_dataset(PushConfig(root=str(root), **qa_settings(push={"select": "all"})))
    assert pushed.pushed == 2
    project = reviewer.post("/api/projects", json={"title": "reviewer-own-project"})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]

    # Control: the session works, and the reviewer sees the pushed media (the root is what is shared).
    project_of_push = next(iter(pushed.projects.values()))
    task = reviewer.get("/api/tasks", params={"project": project_of_push}).json()["tasks"][0]
    media = reviewer.get(task["data"].get("video") or task["data"].get("image"))
    assert media.status_code == 200 and len(media.content) > 100
    staged = next(p for p in ls_server.document_root.iterdir() if p.is_dir())
    assert add_storage(reviewer, project_id, staged).status_code == 201

    outside = ["/etc", ls_server.data_dir, ls_server.data_dir.parent, root, Path.home(), "/",
               Path(ls_server.options.template_cache).expanduser(), ls_server.document_root]
    for folder in outside:
        answer = add_storage(reviewer, project_id, folder)
        assert answer.status_code == 400, (folder, answer.text)
        assert "LOCAL_FILES_DOCUMENT_ROOT" in answer.text
    data = os.path.relpath(ls_server.data_dir, "/")
    for name in ("etc/passwd", "/etc/passwd", "../" * 12 + "etc/passwd", f"{staged.name}/../../etc/passwd",
                 f"{data}/label_studio.sqlite3", f"{data}/.env", f"/{data}/.env"):
        answer = reviewer.get("/data/local-files/", params={"d": name})
        assert answer.status_code in (400, 403, 404, 500), (name, answer.status_code)  # 500: '..' refused
        assert b"root:" not in answer.content and b"SQLite format" not in answer.content
        assert b"SECRET_KEY" not in answer.content and b"Traceback" not in answer.content
        if answer.status_code == 500:
            assert answer.json()["exc_info"] is None  # DEBUG_MODAL_EXCEPTIONS is off


def test_data_dir_template_cache_media_root_and_log_are_private(ls_server, make_synth, qa_settings):
    root = make_synth(num_samples=1, seed=6)
    push_dataset(PushConfig(root=str(root), **qa_settings(push={"select": "all"})))
    private = [ls_server.data_dir, ls_server.document_root, *ls_server.document_root.iterdir()]
    cache = Path(ls_server.options.template_cache).expanduser()
    private += [cache, *cache.glob("label-studio-*")]
    for folder in private:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(ls_server.log_path.stat().st_mode) == 0o600
    for tree in (ls_server.data_dir, *cache.glob("label-studio-*")):
        exposed = [p for p in tree.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o077]
        assert not exposed, exposed[:5]
    assert not [p for p in ls_server.document_root.rglob("*") if p.is_symlink()]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_the_server_listens_on_loopback_only_and_refuses_other_host_names(ls_server):
    assert listening_addresses(ls_server.port) == {"0100007F"}  # 127.0.0.1, and nothing on IPv6
    assert httpx.get(f"{ls_server.url}/health", headers={"Host": "attacker.example"}).status_code == 400
    with httpx.Client(base_url=ls_server.url) as web:  # signup without the invite link
        web.get("/user/signup/")
        signup = web.post("/user/signup/", data={"email": "stranger@y.z", "password": "p4ssword-long",
                                                 "csrfmiddlewaretoken": web.cookies["csrftoken"]})
    assert signup.status_code == 403 and "CSRF" not in signup.text
    missing = httpx.get(f"{ls_server.url}/no-such-page-{ls_server.port}")
    assert missing.status_code == 404 and "URLconf" not in missing.text and "Traceback" not in missing.text
