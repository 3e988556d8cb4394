"""Connecting to Temporal with the project's settings."""

from temporalio.client import Client

from followthrough.settings import Settings


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
