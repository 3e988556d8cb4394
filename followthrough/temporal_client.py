"""Connecting to Temporal with the project's settings: every client encrypts payloads with the codec."""

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from followthrough.codec import data_converter
from followthrough.codec_keys import codec_for
from followthrough.settings import Settings


def converter_for(settings: Settings) -> DataConverter:
    return data_converter(codec_for(settings))


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime whose SDK metrics (workflow and activity task latencies, polls, failures, sticky
    cache, …) are served for Prometheus at ``http://<bind_address>/metrics``. One per process: the exporter
    holds its port for the runtime's life."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client with the codec; ``runtime`` (default: the SDK's own) is what a worker built on this client
    reports its metrics through."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=converter_for(settings), runtime=runtime)
