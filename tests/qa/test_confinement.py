"""Confinement of the review server's files: the document-root rule, private modes, and staging media into
the review-media root (`qa/confinement.py`)."""

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
from instvl.qa.settings import QAConfig


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
