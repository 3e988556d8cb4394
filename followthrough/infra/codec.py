"""Encrypted payloads: an AES-GCM payload codec with key ids.

Every payload Temporal stores for followthrough (workflow and activity inputs and
results, signals, updates, queries, the Web UI summary and details, failure
messages) passes through :class:`EncryptionCodec` on its way out of a worker, the
API or the command line, so the Temporal server and its database hold ciphertext.

An encrypted payload carries the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>``; its data is a 12-byte nonce followed by the AES-GCM
ciphertext of the whole original payload (metadata and data). The first key
encrypts; every key decrypts, so a key is rotated by putting a new one first and
keeping the old ones until nothing encrypted with them is needed any more.

A payload without the encrypted encoding is refused: whoever can reach Temporal
without the key could otherwise send a plain-JSON ``approve`` signal or update
naming any approver. Decoding turns it into a *refused* payload (encoding
``binary/plaintext-refused``) that the project's data converter will not convert,
so the SDK drops a signal carrying one, rejects such an update and fails such a
workflow start — each with the reason — instead of failing the workflow task
over and over. ``accept_plaintext`` (FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT, for the
migration window of a deployment that turns encryption on, and for the saved
histories the replay tests read) passes such payloads through unchanged.
"""

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    PayloadCodec,
    default,
)
from temporalio.exceptions import ApplicationError

ENCODING = b"binary/encrypted"
REFUSED = b"binary/plaintext-refused"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class CodecError(ValueError):
    """A payload this codec cannot decrypt: an unknown key id, or data that is not what was encrypted."""


@dataclass(frozen=True)
class CodecKey:
    id: str
    key: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a codec key needs an id")
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"codec key {self.id!r} is {len(self.key)} bytes; AES-256-GCM needs {KEY_BYTES}")


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[CodecKey], *, accept_plaintext: bool = False) -> None:
        if not keys:
            raise ValueError("the codec needs at least one key")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"codec key ids must be unique, got {ids}")
        self.encrypting_id = keys[0].id
        self._ciphers = {k.id: AESGCM(k.key) for k in keys}
        self.accept_plaintext = accept_plaintext

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) if self.accept_plaintext or _encrypted(p) else _refused(p) for p in payloads]

    async def reveal(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt what is encrypted and show the rest as it is stored: for the codec endpoint, which only
        displays payloads (the Web UI, the CLI) and never feeds them to a workflow."""
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        # The key id is authenticated data: a ciphertext cannot be relabelled with another key's id.
        sealed = self._ciphers[self.encrypting_id].encrypt(nonce, payload.SerializeToString(),
                                                           self.encrypting_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self.encrypting_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written unencrypted: readable as it is
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(f"payload encrypted with codec key {key_id!r}, which is not configured "
                             f"(configured: {', '.join(self._ciphers)}); add it to FOLLOWTHROUGH_CODEC_KEYS")
        if len(payload.data) <= NONCE_BYTES:
            raise CodecError("encrypted payload is too short to hold a nonce and a ciphertext")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecError(f"encrypted payload does not authenticate with codec key {key_id!r}") from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def _encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def _refused(payload: Payload) -> Payload:
    was = payload.metadata.get("encoding", b"").decode(errors="replace")[:64] or "none"
    return Payload(metadata={"encoding": REFUSED, "was": was.encode()})


class RefusedPlaintextConverter(EncodingPayloadConverter):
    """Never converts: a payload that arrived unencrypted raises a non-retryable error naming what to do."""

    @property
    def encoding(self) -> str:
        return REFUSED.decode()

    def to_payload(self, value: object) -> Payload | None:
        return None  # encodes nothing

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> object:
        was = payload.metadata.get("was", b"").decode(errors="replace")
        raise ApplicationError(
            f"refused an unencrypted payload (encoding {was}): with the codec on, signals, updates and workflow "
            f"inputs must be encrypted with the codec key (send through the API, or give the temporal CLI "
            f"--codec-endpoint <api>/codec); FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT=true accepts them during a "
            f"migration", type="UnencryptedPayload", non_retryable=True)


class ProjectPayloadConverter(CompositePayloadConverter):
    """The default converters, plus the one that refuses what the codec refused."""

    def __init__(self) -> None:
        super().__init__(*DefaultPayloadConverter.default_encoding_payload_converters, RefusedPlaintextConverter())


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The converter every Temporal client of the project uses; failure messages and stack traces
    are moved into an encoded attribute so they are encrypted too."""
    if codec is None:
        return default()
    return dataclasses.replace(default(), payload_codec=codec, payload_converter_class=ProjectPayloadConverter,
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
