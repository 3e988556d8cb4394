"""Where settings come from: FOLLOWTHROUGH_* variables and two bare names, nothing else in the environment."""

import pytest

from followthrough.config.settings import Settings


def test_only_our_variables_are_read(monkeypatch: pytest.MonkeyPatch):
    # Names other tools set for themselves: none may turn encryption off, keys optional or widen anything here.
    for name, value in {"CODEC": "off", "ANONYMOUS_ACCESS": "true", "API_HOST": "0.0.0.0", "API_PORT": "9",
                        "OUTBOUND_ALLOW": '["10.0.0.0/8"]', "TASK_SECRETS_FILE": "/tmp/elsewhere.json",
                        "MODE_LIMITS": "{}", "codec": "off"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.codec, settings.anonymous_access, settings.api_host, settings.api_port) == (
        "on", False, "127.0.0.1", 8000)
    assert settings.outbound_allow == [] and settings.task_secrets_file is None

    monkeypatch.setenv("FOLLOWTHROUGH_API_PORT", "8100")
    monkeypatch.setenv("followthrough_codec", "off")  # matched without case, as before
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://db/app")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal:7233")
    settings = Settings()
    assert (settings.api_port, settings.codec, settings.database_url, settings.temporal_address) == (
        8100, "off", "postgresql+asyncpg://db/app", "temporal:7233")
    # In code, fields are set by name.
    assert Settings(anonymous_access=True, api_port=1).anonymous_access is True
