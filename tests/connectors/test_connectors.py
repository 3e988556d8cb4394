"""Connector files: what loading checks, with errors that name the file and the part at fault; the payload
models and requests an action makes; install() and the `followthrough connectors` command."""

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from followthrough import cli
from followthrough.connectors import ConnectorError, install, load, load_file, task_types
from followthrough.connectors.actions import render_request
from followthrough.config.settings import Settings
from followthrough.tasktypes import REGISTRY

GOOD = """
name: notes
base_url: https://notes.example.com/api/
auth: {type: basic, secret: notes_password, username: bot}
actions:
  add_note:
    method: post
    path: /accounts/{{ account }}/notes
    body: {text: "Re {{ account }}: {{ text }}", pinned: "{{ pinned }}", labels: "{{ labels }}"}
    expected_status: 201
    variables:
      pinned: {type: boolean, default: false}
      labels: {type: array, required: false}
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_valid_file_loads_into_an_action_with_a_payload_from_its_variables(tmp_path):
    spec = load_file(write(tmp_path, GOOD))
    assert spec.base_url == "https://notes.example.com/api" and spec.actions["add_note"].method == "POST"
    assert spec.actions["add_note"].expected_status == [201]
    task_type = task_types([spec])["notes.add_note"]
    schema = task_type.payload_schema()
    assert sorted(schema["required"]) == ["account", "text"]
    assert set(schema["properties"]) == {"account", "text", "pinned", "labels"}
    payload = task_type.payload_model.model_validate({"account": "A/1", "text": "call back"})
    request = render_request(spec, spec.actions["add_note"], payload.model_dump(mode="json", by_alias=True))
    assert request.url == "https://notes.example.com/api/accounts/A%2F1/notes"
    assert request.json_body == {"text": "Re A/1: call back", "pinned": False}
    assert request.auth.model_dump() == {"type": "basic", "secret": "notes_password", "header": None,
                                         "username": "bot"}
    draft = asyncio.run(task_type.draft(payload, None))
    assert draft.channel == "http" and draft.data["idempotency_header"] == "Idempotency-Key"
    with pytest.raises(ValidationError, match="Extra inputs"):
        task_type.payload_model.model_validate({"account": "A", "text": "t", "colour": "red"})


@pytest.mark.parametrize("change, message", [
    (lambda s: s.replace("method: post", "method: FETCH"), "actions.add_note.method: method 'FETCH' is not one of"),
    (lambda s: s.replace("pinned: {type", "colour: {type: string}\n      pinned: {type"),
     "actions.add_note.variables: 'colour' is not used by any of the action's templates"),
    (lambda s: s.replace("auth: {type: basic, secret: notes_password, username: bot}",
                         "auth: {type: basic, username: bot, password: hunter2}"),
     "literal credentials are not accepted (auth.password): put the credential in a task secret"),
    (lambda s: s.replace("auth:", "headers: {Authorization: Bearer abc}\nauth:"),
     "header 'Authorization' carries a credential"),
    (lambda s: s.replace("auth:", "headers: {Host: evil.example}\nauth:"),
     "header 'Host' is set by the HTTP client from the URL and body"),
    (lambda s: s.replace("method: post", "method: post\n    idempotency_header: Host"),
     "actions.add_note.idempotency_header: header 'Host' is set by the HTTP client"),
    (lambda s: s.replace("base_url: https://", "api_key: abc123\nbase_url: https://"),
     "literal credentials are not accepted (api_key)"),
    (lambda s: s.replace("base_url: https://", "base_url: https://user:pw@"), "credentials in the URL"),
    (lambda s: s.replace("auth: {type: basic, secret: notes_password, username: bot}", "auth: {type: bearer}"),
     "auth type 'bearer' needs `secret`"),
    (lambda s: s.replace("{{ account }}/notes", "{{ account }}/notes/{{ labels }}"),
     "the optional variable 'labels' has no default"),
    (lambda s: s.replace("{{ text }}", "{{ text "), "actions.add_note.body.text: template syntax error"),
    (lambda s: s.replace("expected_status: 201", "expected_status: 700"), "expected statuses are HTTP statuses"),
    (lambda s: s.replace("path: /accounts", "path: accounts"), "the path starts with /"),
    (lambda s: s.replace("name: notes", "name: Notes!"), "name: String should match pattern"),
    (lambda s: s.replace("add_note:", "add-note:"), "action name 'add-note' must match"),
    (lambda s: s.replace("method: post", "method: post\n    retries: 3"), "actions.add_note.retries: Extra inputs"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_part(tmp_path, change, message):
    path = write(tmp_path, change(GOOD))
    with pytest.raises(ConnectorError) as raised:
        load_file(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value), str(raised.value)


def test_header_auth_is_a_secret_in_a_named_header(tmp_path):
    spec = load_file(write(tmp_path, GOOD.replace("{type: basic, secret: notes_password, username: bot}",
                                                  "{type: header, secret: notes_key, header: X-Notes-Key}")))
    assert spec.auth.model_dump(exclude_none=True) == {"type": "api_key", "secret": "notes_key",
                                                       "header": "X-Notes-Key"}


def test_files_that_are_not_connectors_are_refused(tmp_path):
    with pytest.raises(ConnectorError, match="not valid YAML"):
        load_file(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConnectorError, match="holds a mapping"):
        load_file(write(tmp_path, "- a list"))
    with pytest.raises(ConnectorError, match="the connectors folder does not exist"):
        load(tmp_path / "missing")
    write(tmp_path, GOOD.replace("name: notes", "name: crm"))
    with pytest.raises(ConnectorError, match="two connector files are named 'crm'"):
        load(tmp_path)


def test_base_urls_are_overridden_per_connector(tmp_path):
    [crm] = load(None, {"crm": "http://127.0.0.1:9/v1/"})
    assert crm.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(ConnectorError, match="names 'erp', which is no connector; loaded: crm"):
        load(None, {"erp": "https://erp.example.com"})
    with pytest.raises(ConnectorError, match=r"BASE_URLS\['crm'\]: base_url: .*http"):
        load(None, {"crm": "ftp://crm.example.com"})


def test_install_replaces_the_connector_types_of_an_earlier_install(tmp_path):
    folder = tmp_path / "connectors"
    folder.mkdir()
    write(folder, GOOD, "notes.yaml")
    try:
        install(Settings(connectors_dir=folder, data_dir=tmp_path))
        assert {"notes.add_note", "crm.add_tag"} <= set(REGISTRY)
        install(Settings(data_dir=tmp_path))
        assert "notes.add_note" not in REGISTRY and "crm.add_tag" in REGISTRY
        assert "email" in REGISTRY  # built-in types stay
    finally:
        install(Settings(data_dir=tmp_path))


def test_the_command_lists_connectors_or_names_the_bad_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FOLLOWTHROUGH_CONNECTORS_DIR", str(tmp_path))
    write(tmp_path, GOOD, "notes.yaml")
    assert cli.main(["connectors"]) == 0
    out = capsys.readouterr().out
    assert "crm.create_contact  POST /contacts  [email, first_name, last_name?, location_id?, phone?]" in out
    assert "notes.add_note  POST /accounts/{{ account }}/notes  [account, labels?, pinned?, text]" in out
    write(tmp_path, GOOD.replace("method: post", "method: FETCH"), "notes.yaml")
    assert cli.main(["connectors"]) == 1
    assert "notes.yaml: actions.add_note.method" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    assert cli.main(["connectors", "--dir", str(other)]) == 0  # --dir instead of the setting
    assert "notes.add_note" not in capsys.readouterr().out
