"""The SDK-backed client without a server: auth, paging, errors that name the URL and never the token."""

import base64
import json
import logging

import httpx
import pytest

from instvl.procs import free_port
from instvl.qa.client import ClientConfig, LabelStudioClient, LabelStudioError, LabelStudioUnavailable
from instvl.qa.projects import config_labels, label_config
from instvl.qa.server import Credentials, server_env

SECRET = "secret-token-do-not-leak-42"


@pytest.fixture
def mock_client():
    """Factory: a client whose HTTP goes to `handler(request) -> httpx.Response`."""

    def make(handler, token=SECRET):
        http = httpx.Client(transport=httpx.MockTransport(handler))
        return LabelStudioClient("http://ls.test", token, http=http)

    return make


def test_token_comes_from_the_named_variable_and_stays_out_of_repr(monkeypatch):
    monkeypatch.delenv("MY_LS_TOKEN", raising=False)
    with pytest.raises(ValueError, match="MY_LS_TOKEN"):
        ClientConfig(token_env="MY_LS_TOKEN").build()
    monkeypatch.setenv("MY_LS_TOKEN", SECRET)
    client = ClientConfig(token_env="MY_LS_TOKEN").build()
    assert SECRET not in repr(client) and SECRET not in repr(ClientConfig(token_env="MY_LS_TOKEN"))
    assert SECRET not in repr(Credentials("a@b.c", "pw-123456", SECRET))


def test_legacy_token_is_sent_and_tasks_are_paged(mock_client):
    seen = []

    def handler(request):
        seen.append(request.headers["Authorization"])
        page = int(request.url.params["page"])
        if page > 2:
            return httpx.Response(404, json={"detail": "Invalid page."})  # what the server says past the end
        tasks = [{"id": page * 100 + k, "data": {"sample_id": f"s{page}-{k}", "dataset_id": "d",
                                                  "fingerprint": "f" if k else ""}}
                 for k in range(100 if page == 1 else 3)]
        return httpx.Response(200, json={"tasks": tasks, "total": 103})

    index = mock_client(handler).task_ids_by_key(1)
    assert len(index) == 101 and index[("d", "s2-1", "f")] == [201]  # tasks without a full key are left out
    assert set(seen) == {f"Token {SECRET}"} and len(seen) == 3


def jwt(**claims) -> str:
    """An unsigned JWT with these claims (the client only reads them; the server checks signatures)."""
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def test_personal_access_token_is_refreshed_to_a_bearer(mock_client):
    pat = jwt(token_type="refresh", exp=4_000_000_000)
    access = jwt(token_type="access", exp=4_000_000_000)

    def handler(request):
        if request.url.path == "/api/token/refresh/":
            return httpx.Response(200, json={"access": access})
        assert request.headers["Authorization"] == f"Bearer {access}"
        return httpx.Response(200, json=[{"id": 3, "email": "r@x.org"}])

    assert mock_client(handler, token=pat).users() == {3: "r@x.org"}


def test_http_errors_carry_the_server_detail(mock_client):
    client = mock_client(lambda request: httpx.Response(400, json={"detail": "bad label config"}))
    with pytest.raises(LabelStudioError, match="HTTP 400: bad label config") as err:
        client.projects()
    assert err.value.status_code == 400 and SECRET not in str(err.value)


def test_unreachable_server_names_the_url_not_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}"
    with LabelStudioClient(url, SECRET, timeout_s=2) as client, pytest.raises(LabelStudioUnavailable) as err:
        client.projects()
    assert url in str(err.value) and SECRET not in str(err.value)
    assert SECRET not in caplog.text


def test_label_config_lists_every_phrase_escaped():
    config = label_config("video", {"red ball", 'a "quoted" <thing> & more'}, fps=12.5)
    assert 'framerate="12.5"' in config and "$video" in config
    assert config_labels(config) == {"red ball", 'a "quoted" <thing> & more'}
    assert config_labels(label_config("image", ["cat"])) == {"cat"}
    assert "RectangleLabels" in label_config("image", [])


def test_server_env_is_offline_and_drops_stray_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("USERNAME", "someone-else")
    env = server_env(tmp_path / "d", tmp_path, Credentials("a@b.c", "pw-123456", SECRET))
    assert "USERNAME" not in env and env["LABEL_STUDIO_USERNAME"] == "a@b.c"
    assert env["LATEST_VERSION_CHECK"] == "false" and env["SENTRY_DSN"] == ""
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path)


def test_missing_server_executable_names_the_install_command(tmp_path):
    from instvl.qa.server import find_label_studio

    with pytest.raises(FileNotFoundError, match="pip install 'label-studio"):
        find_label_studio(str(tmp_path / "nope" / "label-studio"))


def test_serve_without_credentials_fails_with_the_variable_names(monkeypatch, capsys):
    from instvl.qa.server import ServeConfig, main

    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(ServeConfig()) == 1
    assert "LABEL_STUDIO_USERNAME, LABEL_STUDIO_PASSWORD, LABEL_STUDIO_API_KEY" in capsys.readouterr().err
