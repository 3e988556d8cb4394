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

A payload without the encrypted encoding (written before encryption was turned
on, or the saved histories the replay tests read) is passed through unchanged.
"""

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec, default

ENCODING = b"binary/encrypted"
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
    def __init__(self, keys: Sequence[CodecKey]) -> None:
        if not keys:
            raise ValueError("the codec needs at least one key")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"codec key ids must be unique, got {ids}")
        self.encrypting_id = keys[0].id
        self._ciphers = {k.id: AESGCM(k.key) for k in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
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


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The converter every Temporal client of the project uses; failure messages and stack traces
    are moved into an encoded attribute so they are encrypted too."""
    if codec is None:
        return default()
    return dataclasses.replace(default(), payload_codec=codec,
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
