"""Connecting to Temporal with the project's settings: every client encrypts payloads with the codec, and every
client is made by :func:`connect`.

Beyond address and namespace, a cluster of one's own or Temporal Cloud needs TLS (a server CA, a client
certificate and key) or an API key. Those come in the SDK's own form, a client profile (``temporalio.envconfig``):
a TOML file (``FOLLOWTHROUGH_TEMPORAL_CONFIG_FILE``, else ``TEMPORAL_CONFIG_FILE``, else
``~/.config/temporalio/temporal.toml``) overlaid by the ``TEMPORAL_*`` variables (``TEMPORAL_API_KEY``,
``TEMPORAL_TLS_CLIENT_CERT_PATH``, ...). Precedence, highest first:

- address: ``FOLLOWTHROUGH_TEMPORAL_ADDRESS`` (or bare ``TEMPORAL_ADDRESS``, which is the SDK's name too), the
  profile file's ``address``, ``localhost:7233``;
- namespace: ``FOLLOWTHROUGH_TEMPORAL_NAMESPACE``, ``TEMPORAL_NAMESPACE``, the profile file's, ``default``;
- TLS, API key, gRPC metadata: the ``TEMPORAL_*`` variables, then the profile file (the SDK's own order).

The API key and the certificates are secrets: nothing here logs or prints them, or the files they are read from.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from followthrough.infra.codec import data_converter
from followthrough.infra.codec_keys import codec_for
from followthrough.config.settings import Settings
from followthrough.infra.tracing import interceptors

HINT = ('set FOLLOWTHROUGH_TEMPORAL_ADDRESS, or a Temporal profile (TEMPORAL_* variables or '
        'FOLLOWTHROUGH_TEMPORAL_CONFIG_FILE); docs/operations.md, "Connecting to a Temporal cluster"')


class TemporalConnectionError(Exception):
    """Temporal cannot be reached with the settings, or its profile cannot be read: one line for an operator,
    naming what was tried and what to set, without secrets."""


def converter_for(settings: Settings) -> DataConverter:
    return data_converter(codec_for(settings))


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime whose SDK metrics (workflow and activity task latencies, polls, failures, sticky
    cache, …) are served for Prometheus at ``http://<bind_address>/metrics``. One per process: the exporter
    holds its port for the runtime's life."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


def load_profile(settings: Settings, environ: Mapping[str, str] | None = None) -> ClientConfigProfile:
    """The Temporal client profile the settings name (empty when ``temporal_envconfig`` is off)."""
    if not settings.temporal_envconfig:
        return ClientConfigProfile()
    file = settings.temporal_config_file
    # The SDK reads a missing file as an empty profile: a file named on purpose must exist.
    named = file or (os.environ if environ is None else environ).get("TEMPORAL_CONFIG_FILE")
    if named and not Path(named).is_file():
        raise TemporalConnectionError(f"the Temporal profile file {'FOLLOWTHROUGH_' if file else ''}"
                                      f"TEMPORAL_CONFIG_FILE names is not a readable file; {HINT}")
    try:
        return ClientConfigProfile.load(settings.temporal_profile or None, config_source=Path(file) if file else None,
                                        override_env_vars=environ)
    except Exception as err:  # the SDK's ConfigError; its first line never quotes the file's content
        raise TemporalConnectionError(f"cannot load the Temporal profile: {_first_line(err)}; {HINT}") from None


def connect_config(settings: Settings, *, address: str | None = None, namespace: str | None = None,
                   environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """The keyword arguments of ``Client.connect`` the settings give (see the module's precedence);
    ``address`` and ``namespace`` (a command's own options) win over everything."""
    try:
        config = load_profile(settings, environ).to_client_connect_config()
    except OSError as err:  # a certificate or key file the profile names; its path stays out of the message
        raise TemporalConnectionError(f"cannot read a TLS certificate or key file of the Temporal profile: "
                                      f"{err.strerror or err}; {HINT}") from None
    explicit = settings.model_fields_set
    config["target_host"] = address or (settings.temporal_address if "temporal_address" in explicit else None) \
        or config.get("target_host") or settings.temporal_address
    config["namespace"] = namespace or (settings.temporal_namespace if "temporal_namespace" in explicit else None) \
        or config.get("namespace") or settings.temporal_namespace
    return config


def describe(config: Mapping[str, Any]) -> str:
    """What a connection tries, for messages: address, namespace, TLS and whether a key is sent, no secrets."""
    tls = config.get("tls")
    mtls = tls is not None and not isinstance(tls, bool) and tls.client_cert is not None
    return (f"{config['target_host']} (namespace {config['namespace']}, TLS {'on' if tls else 'off'}"
            f"{', client certificate' if mtls else ''}{', API key' if config.get('api_key') else ''})")


async def connect(settings: Settings, runtime: Runtime | None = None, *, address: str | None = None,
                  namespace: str | None = None) -> Client:
    """A client with the codec; ``runtime`` (default: the SDK's own) is what a worker built on this client
    reports its metrics through. Raises :class:`TemporalConnectionError` when Temporal cannot be reached."""
    config = connect_config(settings, address=address, namespace=namespace)
    # Built first, each failing with its own error: missing codec keys and tracing without its extra are no
    # connection failure (the SDK's is a RuntimeError too).
    converter = converter_for(settings)
    traced = interceptors(settings)
    try:
        return await Client.connect(**config, data_converter=converter, runtime=runtime, interceptors=traced)
    except RuntimeError as err:  # the SDK's connection failure, a Rust error chain
        raise TemporalConnectionError(f"cannot reach Temporal at {describe(config)}: {_reason(err)}; "
                                      f"{HINT}") from None


def _reason(err: Exception) -> str:
    """The useful end of the SDK's error chain: 'Connection refused', a TLS handshake failure, ..."""
    text = str(err)
    found = re.findall(r'message: "([^"]+)"', text)
    return found[-1] if found else _first_line(err)[:300]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
