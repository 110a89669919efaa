"""Confinement of the local server without starting it: the document-root rule, the environment,
private modes, and staging media into the review-media root."""

import os
import stat
from pathlib import Path

import pytest

from instvl.qa.confinement import (
    check_document_root,
    private_dir,
    restrict_tree,
    review_folder,
    review_media_root,
    stage_file,
)
from instvl.qa.server import HARDENED_ENV, Credentials, LabelStudioServer, server_env
from instvl.qa.settings import QAConfig, ServeStepConfig

CREDS = Credentials("a@b.c", "pw-123456", "token-123456")


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A fake host: home folder, Label Studio data dir and template cache inside it."""
    home = tmp_path / "home" / "me"
    paths = {"home": home, "data": home / ".local/share/instvl/label-studio", "cache": home / ".cache/instvl"}
    for path in paths.values():
        path.mkdir(parents=True)
    return paths


def check(root: str | Path, host: dict[str, Path]) -> Path:
    return check_document_root(root, data_dir=host["data"], cache=host["cache"], home=host["home"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("where", "reason"), [
    (lambda h: Path("/"), "filesystem root"),
    (lambda h: h["data"].parent, "contains the Label Studio data dir"),
    (lambda h: h["data"], "contains the Label Studio data dir"),
    (lambda h: h["data"] / "media", "lies inside the Label Studio data dir"),
    (lambda h: h["cache"], "contains the template cache"),
    (lambda h: h["cache"] / "label-studio-1.23.2-abc", "lies inside the template cache"),
    (lambda h: h["home"], "contains the home folder"),
    (lambda h: h["home"].parent, "contains the home folder"),
])
def test_unsafe_document_roots_are_refused_naming_the_setting_and_path(host, where, reason):
    root = where(host)
    with pytest.raises(ValueError, match=reason) as err:
        check(root, host)
    assert f"server.document_root {root}" in str(err.value)
    assert "dedicated review-media folder" in str(err.value)


@pytest.mark.parametrize(("target", "reason"), [
    ("data", "lies inside the Label Studio data dir"), ("cache", "lies inside the template cache"),
    ("home", "contains the home folder")])
def test_a_symlink_resolving_into_a_protected_folder_is_refused(host, target, reason, tmp_path):
    inside = host[target] if target == "home" else host[target] / "media"
    link = tmp_path / "innocent-media"
    link.symlink_to(inside, target_is_directory=True)
    with pytest.raises(ValueError, match=reason) as err:
        check(link, host)
    assert f"server.document_root {link} (resolves to {inside})" in str(err.value)
    (tmp_path / "to-root").symlink_to("/", target_is_directory=True)
    with pytest.raises(ValueError, match="filesystem root"):
        check(tmp_path / "to-root", host)


def test_a_dedicated_folder_is_accepted_resolved(host, tmp_path):
    beside = host["data"].with_name("label-studio-media")
    assert check(beside, host) == beside
    assert check(host["home"] / "review-media", host) == (host["home"] / "review-media").resolve()
    (tmp_path / "via-link").symlink_to(host["home"], target_is_directory=True)
    assert check(tmp_path / "via-link" / "media", host) == host["home"] / "media"


def test_default_review_media_root_sits_beside_the_data_dir(tmp_path):
    cfg = QAConfig(serve={"data_dir": str(tmp_path / "ls" / "data"),
                            "template_cache": str(tmp_path / "cache")})
    assert review_media_root(cfg) == tmp_path / "ls" / "data-media"
    explicit = QAConfig(server={"document_root": str(tmp_path / "ls")}, serve=cfg.serve)
    with pytest.raises(ValueError, match="contains the Label Studio data dir"):
        review_media_root(explicit)
    assert QAConfig().server.document_root is None


def test_the_server_refuses_an_unsafe_root_before_starting_anything(tmp_path):
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\nexit 1\n")
    options = ServeStepConfig(label_studio_bin=str(fake), data_dir=str(tmp_path / "ls" / "data"),
                           template_cache=None)
    for unsafe in ("/", tmp_path / "ls", tmp_path / "ls" / "data"):
        with pytest.raises(ValueError, match="server.document_root"):
            LabelStudioServer(options, CREDS, unsafe)
    assert not (tmp_path / "ls").exists()
    assert LabelStudioServer(options, CREDS, tmp_path / "media").document_root == tmp_path / "media"


def test_serve_refuses_the_filesystem_root(monkeypatch, capsys, tmp_path):
    from instvl.qa.server import ServeConfig, main

    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY"):
        monkeypatch.setenv(name, "value-123456")
    fake = tmp_path / "label-studio"
    fake.write_text("")
    cfg = ServeConfig(server={"document_root": "/"}, serve={"label_studio_bin": str(fake)})
    assert main(cfg) == 1
    assert "server.document_root / is the filesystem root" in capsys.readouterr().err


def test_push_refuses_the_filesystem_root(tmp_path, capsys):
    from instvl.qa.push import PushConfig, main

    (tmp_path / "ds" / "shards").mkdir(parents=True)
    cfg = PushConfig(root=str(tmp_path / "ds"), server={"document_root": "/"})
    assert main(cfg) == 1
    assert "server.document_root / is the filesystem root" in capsys.readouterr().err


def test_server_env_pins_every_spelling_and_drops_stray_label_studio_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "/")
    monkeypatch.setenv("HEARTEX_DEBUG", "true")
    monkeypatch.setenv("DEBUG", "1")
    monkeypatch.setenv("LABEL_STUDIO_SSRF_PROTECTION_ENABLED", "false")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "client-side-token")
    env = server_env(tmp_path / "d", tmp_path / "media", CREDS)
    for name in ("LOCAL_FILES_DOCUMENT_ROOT", "DEBUG", "SSRF_PROTECTION_ENABLED", "ALLOWED_HOSTS"):
        values = {env[f"{prefix}{name}"] for prefix in ("LABEL_STUDIO_", "HEARTEX_", "")}
        assert len(values) == 1, name
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path / "media")
    assert env["LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["DEBUG"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "true"
    assert env["DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["ALLOWED_HOSTS"] == HARDENED_ENV["ALLOWED_HOSTS"]
    assert "LABEL_STUDIO_API_KEY" not in env
    init = server_env(tmp_path / "d", None, CREDS)
    assert init["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "false"  # set: no autodetected mydata/ either
    assert not any(k.endswith("LOCAL_FILES_DOCUMENT_ROOT") for k in init)


def test_private_dirs_and_trees_lose_group_and_other_access(tmp_path):
    tree = tmp_path / "data"
    (tree / "sub").mkdir(parents=True)
    (tree / "label_studio.sqlite3").write_bytes(b"token")
    (tree / "sub" / "run.sh").write_text("")
    os.chmod(tree, 0o755)
    os.chmod(tree / "sub", 0o755)
    os.chmod(tree / "label_studio.sqlite3", 0o644)
    os.chmod(tree / "sub" / "run.sh", 0o755)
    restrict_tree(tree)
    assert (mode(tree), mode(tree / "sub")) == (0o700, 0o700)
    assert (mode(tree / "label_studio.sqlite3"), mode(tree / "sub" / "run.sh")) == (0o600, 0o700)
    assert mode(private_dir(tmp_path / "new" / "media")) == 0o700
    os.chmod(tmp_path / "new" / "media", 0o755)
    assert mode(private_dir(tmp_path / "new" / "media")) == 0o700


def test_media_are_hard_linked_into_a_private_folder_per_dataset(tmp_path):
    media_root = tmp_path / "review-media"
    source = tmp_path / "corpus" / "media" / "s1.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"video")
    folder = review_folder(media_root, tmp_path / "corpus")
    assert folder.parent == media_root and folder.name.startswith("corpus-")
    assert review_folder(media_root, tmp_path / "other" / "corpus") != folder
    assert (mode(media_root), mode(folder)) == (0o700, 0o700)
    staged = stage_file(source, folder)
    assert staged == folder / "s1.mp4" and not staged.is_symlink()
    assert staged.stat().st_ino == source.stat().st_ino
    assert stage_file(source, folder) == staged and sorted(p.name for p in folder.iterdir()) == ["s1.mp4"]


def test_media_are_copied_privately_when_linking_fails(tmp_path, monkeypatch):
    source = tmp_path / "s2.jpg"
    source.write_bytes(b"image")
    source.chmod(0o644)

    def no_link(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    staged = stage_file(source, private_dir(tmp_path / "media" / "ds-1"))
    assert staged.read_bytes() == b"image" and mode(staged) == 0o600 and not staged.is_symlink()
