"""Secret values kept out of error texts: the activity's ApplicationError and every cause Temporal stores, the
worker's log lines, the task-secrets file's checks."""

import json
import logging
import sys
import uuid
from urllib.parse import quote, quote_plus
from pathlib import Path

import httpx
import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from followthrough.activities.errors import reports_attempt
from followthrough.infra import redaction
from followthrough.infra.llm import LlmConfig, LlmNotConfigured, api_key
from followthrough.infra.logs import JsonFormatter, TextFormatter
from followthrough.infra.secrets import SecretStore
from followthrough.infra.task_secrets import (TaskSecrets, TaskSecretsFileInvalid, TaskSecretUnavailable,
                                        TaskSecretUnusable)


def _chain(err: BaseException | None) -> list[BaseException]:
    found = []
    while err is not None:
        found.append(err)
        err = err.__cause__ or err.__context__
    return found


async def test_an_activity_error_and_its_causes_hold_no_secret_value(tmp_path: Path):
    value = f"sk-{uuid.uuid4().hex}\n"
    (tmp_path / "t.json").write_text(json.dumps({"acme": {"k": value}}))
    resolved = TaskSecrets(tmp_path / "t.json").resolve("acme", "k", "api.example")
    assert resolved == value

    @activity.defn(name="leaky")
    @reports_attempt
    async def leaky() -> None:
        try:  # what httpx (h11) says of a header value it refuses
            raise httpx.LocalProtocolError(f"Illegal header value {('Bearer ' + value).encode()!r}")
        except httpx.LocalProtocolError as err:
            raise RuntimeError(f"send failed: {err}") from err

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(leaky)
    texts = [str(e) for e in _chain(raised.value)]
    assert len(texts) == 2 and all("[redacted]" in text for text in texts), texts
    for text in texts:
        assert value.strip() not in text
    assert [e.type for e in _chain(raised.value)] == ["RuntimeError", "LocalProtocolError"]


def test_log_lines_hold_no_secret_value(monkeypatch: pytest.MonkeyPatch):
    value = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LOG_PW", value)
    SecretStore(environ=None).get("log_pw")  # an operator secret: remembered too
    try:
        raise ValueError(f"login refused for {value!r}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "tried %s", (value,), sys.exc_info())
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert value not in line and "[redacted]" in line


def test_task_secrets_are_per_tenant_host_bound_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"acme": {
        "crm": {"value": "crm-value-1", "hosts": ["api.crm.example", "*.hooks.example"]},
        "from_env": {"env": "ACME_FROM_ENV"}, "spaced": " padded-value", "nowhere": {"value": "v-1234", "hosts": []}}}))
    store = TaskSecrets(path, environ={"ACME_FROM_ENV": "env-value-1"})
    assert store.resolve("acme", "crm", "API.crm.example") == "crm-value-1"
    assert store.resolve("acme", "crm", "a.hooks.example", header=True) == "crm-value-1"
    assert store.resolve("acme", "from_env", "anywhere.example") == "env-value-1"
    for tenant, name, host in [("acme", "crm", "hooks.example"), ("acme", "crm", "evil.example"),
                               ("other", "crm", "api.crm.example"), ("acme", "nowhere", "x.example"),
                               ("acme", "missing", "x.example")]:
        with pytest.raises(TaskSecretUnavailable):
            store.resolve(tenant, name, host)
    with pytest.raises(TaskSecretUnusable) as unusable:
        store.resolve("acme", "spaced", "x.example", header=True)
    assert "padded-value" not in str(unusable.value)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"acme": {"short": "x9z", "empty": ""}}))
    with pytest.raises(TaskSecretUnusable, match="'short' of tenant 'acme' is shorter than 4 characters"):
        TaskSecrets(short).resolve("acme", "short", "x.example")
    with pytest.raises(TaskSecretUnusable, match="'empty' of tenant 'acme' is empty$"):
        TaskSecrets(short).resolve("acme", "empty", "x.example")
    assert store.refusal("acme", "crm", "https://api.crm.example/v1") is None
    assert store.refusal("acme", "crm", "https://evil.example/") == store.refusal("acme", "crm", "https://evil.example/")
    assert "evil.example" in store.refusal("acme", "crm", "https://evil.example/")
    assert store.refusal("acme", "from_env", None) is None  # names only: no value needed
    assert TaskSecrets(path, environ={}).refusal("acme", "from_env", None) is None
    with pytest.raises(TaskSecretUnavailable, match="ACME_FROM_ENV"):
        TaskSecrets(path, environ={}).resolve("acme", "from_env", "x.example")
    path.write_text(json.dumps({"acme": {"crm": {"value": "v", "env": "E"}}}))
    with pytest.raises(TaskSecretsFileInvalid):
        store.refusal("acme", "crm")
    path.write_text("{not json")
    with pytest.raises(TaskSecretsFileInvalid) as invalid:
        store.refusal("acme", "crm")
    assert "not json" not in str(invalid.value)
    # Another tenant's broken entry: the error a task of acme's would show names neither that tenant nor the
    # secret; the operator's log line does.
    path.write_text(json.dumps({"acme": {"crm": "crm-value-1"}, "globex": {"merger_key": {"hosts": []}}}))
    with caplog.at_level(logging.ERROR, logger="followthrough.infra.task_secrets"), \
            pytest.raises(TaskSecretsFileInvalid) as invalid:
        store.resolve("acme", "crm", "x.example")
    assert "globex" not in str(invalid.value) and "merger_key" not in str(invalid.value)
    assert "an operator must fix it" in str(invalid.value)
    assert "task secret 'merger_key' of tenant 'globex'" in caplog.text


def test_escaped_forms_of_a_value_are_redacted_too():
    value = redaction.remember(f"ab\"c\n{uuid.uuid4().hex}")
    for form in (value, repr(value), repr(value.encode()), json.dumps(value)):
        assert "[redacted]" in redaction.redact(f"got {form}")
        assert value.split("\n")[1] not in redaction.redact(f"got {form}")


def test_a_value_as_a_url_carries_it_is_redacted_too():
    value = redaction.remember(f"ann {uuid.uuid4().hex[:6]}@example.com/x")
    for url in (f"https://a.example/?email={quote_plus(value)}", f"https://a.example/{quote(value, safe='')}"):
        assert redaction.redact(url).endswith("[redacted]"), url


def test_an_llm_key_a_header_cannot_carry_is_refused_without_its_value(monkeypatch: pytest.MonkeyPatch):
    value = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LLM_NL", value + "\n")
    config = LlmConfig(base_url="http://127.0.0.1:9", model="m", api_key_secret="llm_nl")
    with pytest.raises(LlmNotConfigured) as refused:
        api_key(config, SecretStore())
    assert "'llm_nl'" in str(refused.value) and value not in str(refused.value)
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LLM_NL", value)
    assert api_key(config, SecretStore()) == value
