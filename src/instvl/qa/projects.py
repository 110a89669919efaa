"""Review projects: label configs filled with the dataset's phrases, one project per media kind (and fps).

The Video tag's `framerate` holds for the whole project, so clips of different frame rates go to
different projects (`instvl-video-8fps`). A project's labels only grow: phrases already there are
kept, so annotations made earlier stay valid when new phrases arrive.
"""

import re
from importlib import resources
from typing import Any
from xml.sax.saxutils import quoteattr

from instvl.qa.client import ClientConfig, LabelStudioClient

LABEL_VALUE = re.compile(r"""<Label\s+value=(?:"([^"]*)"|'([^']*)')""")
UNESCAPE = {"&quot;": '"', "&lt;": "<", "&gt;": ">", "&apos;": "'", "&amp;": "&"}


def template(media_type: str) -> str:
    name = "video.xml" if media_type == "video" else "image.xml"
    return (resources.files("instvl.qa") / "label_configs" / name).read_text()


def label_config(media_type: str, phrases: set[str] | list[str], fps: float | None = None) -> str:
    """The label config of a project for `media_type`, with one label per phrase."""
    labels = "\n".join(f"    <Label value={quoteattr(p)}/>" for p in sorted(set(phrases)))
    return template(media_type).format(labels=labels, framerate=f"{fps:g}" if fps else "25")


def config_labels(config: str) -> set[str]:
    """The label values declared in a label config."""
    found = set()
    for double, single in LABEL_VALUE.findall(config):
        raw = double or single
        for escaped, char in UNESCAPE.items():
            raw = raw.replace(escaped, char)
        found.add(raw)
    return found


def project_title(server: ClientConfig, media_type: str, fps: float | None) -> str:
    if media_type == "video":
        return f"{server.video_project}-{fps:g}fps"
    return server.image_project


def ensure_project(client: LabelStudioClient, title: str, media_type: str, phrases: set[str],
                   fps: float | None) -> dict[str, Any]:
    """Get or create the project `title`; add labels for phrases it does not know yet and bring an older
    config (made by an earlier instvl) up to the current template."""
    project = client.get_or_create_project(title, label_config(media_type, phrases, fps))
    known = config_labels(project.get("label_config") or "")
    wanted = label_config(media_type, phrases | known, fps)
    if project.get("label_config") != wanted:
        project = client.update_label_config(project["id"], wanted)
    return project
