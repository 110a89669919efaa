"""Confine a review server to one folder: which folders may be served, and how media are staged there.

What a reviewer can reach. Label Studio lets *any* member of the organisation create a local-files
storage on any existing folder under LOCAL_FILES_DOCUMENT_ROOT and then read every file below it, so
that root is the whole exposure. It is therefore:
- a dedicated review-media folder per server, `server.document_root` (default `<serve.data_dir>-media`),
  into which `qa push` hard-links (or copies) the media a push needs, one folder per dataset
  (`review_folder`, `stage_file`); never symlinks, because Label Studio checks storage paths lexically
  and would follow a link out of the root;
- refused (`check_document_root`, ValueError naming the setting and the path) when it is the
  filesystem root, contains or lies inside the data dir or the template cache (database with the
  admin token, Django secret key), or contains the user's home folder; symlinks are resolved first.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path

from instvl.qa.settings import QAConfig

MEDIA_ROOT_SUFFIX = "-media"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700, also when it existed already."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def restrict_tree(path: Path) -> None:
    """Folders 0700 and files without group/other bits under `path` (symlinks are left alone)."""
    if not path.is_dir() or path.is_symlink():
        return
    path.chmod(0o700)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o700)
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                os.chmod(file, os.stat(file).st_mode & 0o700)


def check_document_root(document_root: str | Path, *, data_dir: str | Path, cache: str | Path | None,
                        home: str | Path | None = None, setting: str = "server.document_root") -> Path:
    """The resolved review-media root; ValueError when serving it could expose the host's files.

    Refused: the filesystem root, a folder that contains or lies inside the server's data dir or the
    template cache, and a folder that contains the user's home (a folder inside home is fine).
    Symlinks are resolved first, so a link into one of those is refused too.
    """
    root = Path(document_root).expanduser().resolve()
    named = f"{setting} {document_root}"
    if str(root) != str(document_root):
        named += f" (resolves to {root})"
    hint = (f"set {setting} to a dedicated review-media folder (null: <serve.data_dir>{MEDIA_ROOT_SUFFIX}); "
            "every reviewer can read every file under it")
    if root == Path(root.anchor):
        raise ValueError(f"{named} is the filesystem root; {hint}")
    home = Path(home if home is not None else Path.home()).expanduser().resolve()
    if home.is_relative_to(root):
        raise ValueError(f"{named} contains the home folder {home}; {hint}")
    protected = {"the Label Studio data dir (serve.data_dir)": data_dir,
                 "the template cache (serve.template_cache)": cache}
    for what, where in protected.items():
        if where is None:
            continue
        path = Path(where).expanduser().resolve()
        if path.is_relative_to(root):
            raise ValueError(f"{named} contains {what} {path}; {hint}")
        if root.is_relative_to(path):
            raise ValueError(f"{named} lies inside {what} {path}; {hint}")
    return root


def review_media_root(cfg: QAConfig) -> Path:
    """The folder the server serves: `server.document_root`, else `<serve.data_dir>-media`; checked."""
    configured = cfg.server.document_root or cfg.serve.data_dir.rstrip("/") + MEDIA_ROOT_SUFFIX
    return check_document_root(configured, data_dir=cfg.serve.data_dir, cache=cfg.serve.template_cache)


def check_dataset_root(dataset_root: str | Path, document_root: Path) -> Path:
    """The resolved dataset root; ValueError naming both paths when it lies inside the review-media
    root (`document_root`, resolved), where every reviewer could read its shards, not only its media."""
    root = Path(dataset_root).expanduser().resolve()
    if root.is_relative_to(document_root):
        shown = f"{dataset_root}" + (f" (resolves to {root})" if str(root) != str(dataset_root) else "")
        raise ValueError(f"the dataset root {shown} lies inside the review-media root {document_root} "
                         "(server.document_root), where every reviewer could read its shards; keep "
                         "datasets outside it (push links only their media into it)")
    return root


def review_folder(document_root: Path, dataset_root: str | Path) -> Path:
    """The private folder under the review-media root holding one dataset's media: <name>-<path digest>."""
    resolved = Path(dataset_root).expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    name = SAFE_NAME.sub("_", resolved.name).strip("._")[:60] or "dataset"
    private_dir(document_root)
    return private_dir(document_root / f"{name}-{digest}")


def stage_file(source: Path, folder: Path) -> Path:
    """Hard-link `source` into `folder` (a private copy when linking fails); never a symlink."""
    target = folder / source.name
    if target.is_file() and not target.is_symlink() and target.stat().st_size == source.stat().st_size:
        return target
    tmp = folder / f".tmp-{os.getpid()}-{source.name}"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or linking not allowed
        shutil.copyfile(source, tmp)
        tmp.chmod(0o600)
    os.replace(tmp, target)
    return target
