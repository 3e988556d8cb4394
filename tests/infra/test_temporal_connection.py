"""Connecting to a cluster of one's own or Temporal Cloud: TLS with client certificates and an API key from a
Temporal profile (TOML file or TEMPORAL_* variables), through a real TLS endpoint in front of the dev server;
the precedence of the FOLLOWTHROUGH_* settings over the profile; and the one line each command that connects
prints when Temporal is out of reach."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from followthrough.infra import temporal_client
from followthrough.infra.codec_keys import CodecNotConfigured
from followthrough.config.settings import Settings
from tests.conftest import TEST_CODEC_ENV, make_settings, running_stack
from tests.helpers import free_port, task_body
from tests.tls_proxy import SERVER_NAME, Pki, TlsProxy, make_pki

API_KEY = "tc-api-key-0123456789abcdef"  # what a Temporal Cloud API key stands for here


@pytest.fixture(autouse=True)
def no_ambient_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say every variable they mean: none from the shell that runs them."""
    for name in list(os.environ):
        if name.startswith(("TEMPORAL_", "FOLLOWTHROUGH_TEMPORAL_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(scope="module")
async def proxy(dev_env: WorkflowEnvironment, pki: Pki) -> AsyncIterator[TlsProxy]:
    async with TlsProxy(pki, dev_env.client.service_client.config.target_host) as running:
        yield running


def profile_file(folder: Path, body: str) -> Path:
    path = folder / "temporal.toml"
    path.write_text(body)
    return path


def mtls_profile(address: str, pki: Pki, *, client_cert: bool = True, extra: str = "") -> str:
    tls = f'server_ca_cert_path = "{pki.ca}"\nserver_name = "{SERVER_NAME}"\n'
    if client_cert:
        tls += f'client_cert_path = "{pki.client_cert}"\nclient_key_path = "{pki.client_key}"\n'
    return f'[profile.default]\naddress = "{address}"\nnamespace = "default"\n{extra}\n[profile.default.tls]\n{tls}'


async def describe_namespace(settings: Settings) -> str:
    client = await temporal_client.connect(settings)
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    return described.namespace_info.name


async def test_mtls_from_a_profile_file(proxy: TlsProxy, pki: Pki, tmp_path: Path):
    config = profile_file(tmp_path, mtls_profile(proxy.address, pki))
    settings = make_settings("", tmp_path, temporal_config_file=config)
    assert await describe_namespace(settings) == "default"


async def test_mtls_from_the_sdk_variables(proxy: TlsProxy, pki: Pki, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    for name, value in {"TEMPORAL_ADDRESS": proxy.address, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca),
                        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME, "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pki.client_cert),
                        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pki.client_key)}.items():
        monkeypatch.setenv(name, value)
    assert await describe_namespace(make_settings("", tmp_path)) == "default"


async def test_without_the_client_certificate_the_endpoint_refuses(proxy: TlsProxy, pki: Pki, tmp_path: Path):
    config = profile_file(tmp_path, mtls_profile(proxy.address, pki, client_cert=False))
    with pytest.raises(temporal_client.TemporalConnectionError) as refused:
        await temporal_client.connect(make_settings("", tmp_path, temporal_config_file=config))
    message = str(refused.value)
    assert f"cannot reach Temporal at {proxy.address} (namespace default, TLS on)" in message
    assert "FOLLOWTHROUGH_TEMPORAL_ADDRESS" in message and "\n" not in message
    assert str(pki.ca) not in message


async def test_the_followthrough_address_wins_over_the_profile(proxy: TlsProxy, pki: Pki, tmp_path: Path):
    # The profile's address is closed; its TLS still applies to the address the settings name.
    config = profile_file(tmp_path, mtls_profile(f"127.0.0.1:{free_port()}", pki))
    settings = make_settings("", tmp_path, temporal_config_file=config, temporal_address=proxy.address)
    assert await describe_namespace(settings) == "default"


async def test_the_api_key_reaches_the_server_as_a_bearer_token(proxy: TlsProxy, pki: Pki, tmp_path: Path):
    config = profile_file(tmp_path, mtls_profile(proxy.address, pki, extra=f'api_key = "{API_KEY}"'))
    settings = make_settings("", tmp_path, temporal_config_file=config)
    proxy.received.clear()
    assert await describe_namespace(settings) == "default"
    calls = [dict(block) for block in proxy.headers() if ":path" in dict(block)]
    described = [call for call in calls if call[":path"].endswith("/DescribeNamespace")]
    assert described and all(call.get("authorization") == f"Bearer {API_KEY}" for call in described)


def test_a_key_from_the_environment_is_in_the_connect_config_and_never_in_messages(tmp_path: Path):
    settings = make_settings("", tmp_path, temporal_address="cloud.example:7233")
    config = temporal_client.connect_config(settings, environ={"TEMPORAL_API_KEY": API_KEY,
                                                               "TEMPORAL_NAMESPACE": "acme.a1b2c"})
    assert (config["target_host"], config["namespace"], config["api_key"], config["tls"]) == (
        "cloud.example:7233", "acme.a1b2c", API_KEY, True)  # a key turns TLS on, as Temporal Cloud needs
    described = temporal_client.describe(config)
    assert described == "cloud.example:7233 (namespace acme.a1b2c, TLS on, API key)" and API_KEY not in described


def test_precedence_of_address_and_namespace(tmp_path: Path):
    config = profile_file(tmp_path, '[profile.default]\naddress = "file:7233"\nnamespace = "from-file"\n'
                                    '[profile.other]\naddress = "other:7233"\n')

    def resolved(settings: Settings, environ: dict[str, str] | None = None) -> tuple[str, str]:
        config = temporal_client.connect_config(settings, environ=environ or {})
        return config["target_host"], config["namespace"]

    from_file = make_settings("", tmp_path, temporal_config_file=config)
    assert resolved(from_file) == ("file:7233", "from-file")
    assert resolved(from_file, {"TEMPORAL_NAMESPACE": "from-env"}) == ("file:7233", "from-env")
    ours = make_settings("", tmp_path, temporal_config_file=config, temporal_address="ours:7233",
                         temporal_namespace="ours")
    assert resolved(ours, {"TEMPORAL_NAMESPACE": "from-env"}) == ("ours:7233", "ours")
    assert resolved(make_settings("", tmp_path, temporal_config_file=config, temporal_profile="other")) == (
        "other:7233", "default")
    assert resolved(make_settings("", tmp_path)) == ("localhost:7233", "default")  # no file: the defaults
    # Off (what `followthrough dev` gives its processes): the profile's address, TLS and key are not used.
    plain = temporal_client.connect_config(make_settings("", tmp_path, temporal_config_file=config,
                                                         temporal_envconfig=False),
                                           environ={"TEMPORAL_API_KEY": API_KEY})
    assert plain == {"target_host": "localhost:7233", "namespace": "default"}


def test_a_named_profile_file_that_is_missing_or_broken_is_refused(tmp_path: Path):
    with pytest.raises(temporal_client.TemporalConnectionError, match="FOLLOWTHROUGH_TEMPORAL_CONFIG_FILE names"):
        temporal_client.connect_config(make_settings("", tmp_path, temporal_config_file=tmp_path / "absent.toml"))
    broken = profile_file(tmp_path, f'[profile.default]\napi_key = "{API_KEY}\n')
    with pytest.raises(temporal_client.TemporalConnectionError) as refused:
        temporal_client.connect_config(make_settings("", tmp_path, temporal_config_file=broken))
    assert API_KEY not in str(refused.value) and "\n" not in str(refused.value)
    missing_key = profile_file(tmp_path, f'[profile.default.tls]\nclient_cert_path = "{tmp_path}/no.pem"\n'
                                         f'client_key_path = "{tmp_path}/no.key"\n')
    with pytest.raises(temporal_client.TemporalConnectionError) as unreadable:
        temporal_client.connect_config(make_settings("", tmp_path, temporal_config_file=missing_key))
    assert "cannot read a TLS certificate or key file" in str(unreadable.value)
    assert str(tmp_path) not in str(unreadable.value)


# ---- Temporal out of reach at start ------------------------------------------

COMMANDS = [["worker"], ["api"], ["reconcile"], ["temporal", "setup"]]


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str, str]]:
    """Each command run against a closed port, as an operator would start it: real processes, since what is
    checked is what reaches their stderr and exit status. All at once, since each is a few seconds of imports.
    One worker also has an API key, which must not reach its message."""
    folder = tmp_path_factory.mktemp("unreachable")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FOLLOWTHROUGH_", "TEMPORAL_"))} \
        | TEST_CODEC_ENV | {"FOLLOWTHROUGH_DATA_DIR": str(folder)}
    runs = {" ".join(command): (command, base | {"FOLLOWTHROUGH_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
            for command in COMMANDS}
    runs["worker with a key"] = (["worker"], base | {"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
                                                     "TEMPORAL_API_KEY": API_KEY})

    started = {name: subprocess.Popen([sys.executable, "-m", "followthrough.cli", *command], cwd=folder, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, (command, env) in runs.items()}
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=120)
        env = runs[name][1]
        results[name] = (process.returncode, out, err,
                         env.get("FOLLOWTHROUGH_TEMPORAL_ADDRESS") or env["TEMPORAL_ADDRESS"])
    return results


@pytest.mark.parametrize("name", [" ".join(command) for command in COMMANDS] + ["worker with a key"])
def test_temporal_out_of_reach_is_one_line_and_a_failed_exit(unreachable, name: str):
    code, out, err, address = unreachable[name]
    assert code != 0, (out, err)
    assert "Traceback" not in err and "panicked" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"followthrough {name.removesuffix(' with a key')}: cannot reach Temporal at {address} "
                               f"(namespace default, TLS ")
    assert "FOLLOWTHROUGH_TEMPORAL_ADDRESS" in lines[0]
    if name == "worker with a key":
        assert "TLS on, API key)" in lines[0] and API_KEY not in err


async def test_links_to_runs_name_the_namespace_connected_to(dev_env: WorkflowEnvironment, sqlite_engine,
                                                            tmp_path: Path):
    # Settings naming another namespace than the client's, as when a profile chose it: the client's is linked.
    async with running_stack(dev_env, sqlite_engine, tmp_path, temporal_namespace="not-connected") as stack:
        created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
        assert created.status_code == 201, created.text
        assert "/namespaces/default/workflows/" in created.json()["links"]["temporal_ui"]


async def test_missing_codec_keys_are_no_connection_failure(dev_env: WorkflowEnvironment, tmp_path: Path):
    # Temporal is there; what is missing is the codec's keys, and the error says that rather than "cannot reach".
    settings = Settings(data_dir=tmp_path, temporal_address=dev_env.client.service_client.config.target_host)
    with pytest.raises(CodecNotConfigured, match="FOLLOWTHROUGH_CODEC_KEYS"):
        await temporal_client.connect(settings)
