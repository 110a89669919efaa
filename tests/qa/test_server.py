"""The local server without starting it: it refuses an unsafe document root before starting anything,
and its environment pins Label Studio's settings."""

import pytest

from instvl.qa.server import HARDENED_ENV, Credentials, LabelStudioServer, server_env
from instvl.qa.settings import ServeStepConfig

CREDS = Credentials("a@b.c", "pw-123456", "token-123456")


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
