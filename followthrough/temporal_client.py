"""Connecting to Temporal with the project's settings: every client encrypts payloads with the codec."""

from temporalio.client import Client
from temporalio.converter import DataConverter

from followthrough.codec import data_converter
from followthrough.codec_keys import codec_for
from followthrough.settings import Settings


def converter_for(settings: Settings) -> DataConverter:
    return data_converter(codec_for(settings))


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=converter_for(settings))
