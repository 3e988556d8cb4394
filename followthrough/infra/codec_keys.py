"""The payload codec the settings ask for: keys from named secrets, or the data folder's generated key."""

import base64
import binascii
import hashlib

from followthrough.infra.codec import KEY_BYTES, CodecKey, EncryptionCodec
from followthrough.infra.key_files import generated_key
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import CodecKeyRef, Settings

LOCAL_KEY_FILE = "codec.key"


class CodecNotConfigured(RuntimeError):
    """Encryption is on but no key is configured: refusing to write plain payloads."""


def _base64(text: str) -> bytes | None:
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):  # standard, then URL-safe
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def key_from_secret(key_id: str, value: str) -> CodecKey:
    """A key stored as base64 (standard or URL-safe) of 32 random bytes."""
    if not value.strip():
        raise ValueError(f"the secret holding codec key {key_id!r} is empty")
    raw = _base64(value.strip())
    if raw is None:
        raise ValueError(f"codec key {key_id!r} is not base64 (make one with: "
                         f"python -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')")
    if len(raw) != KEY_BYTES:
        raise ValueError(f"codec key {key_id!r} decodes to {len(raw)} bytes; it must be {KEY_BYTES}")
    return CodecKey(key_id, raw)


def configured_keys(settings: Settings, store: SecretStore | None = None) -> list[CodecKey]:
    store = store or SecretStore(settings.secrets_file)
    refs = [ref if isinstance(ref, CodecKeyRef) else CodecKeyRef(id=ref, secret=ref) for ref in settings.codec_keys]
    return [key_from_secret(ref.id, store.get(ref.secret)) for ref in refs]


def local_key(settings: Settings) -> CodecKey:
    raw = generated_key(settings.data_dir / LOCAL_KEY_FILE, KEY_BYTES)
    return CodecKey(f"local-{hashlib.sha256(raw).hexdigest()[:8]}", raw)


def codec_for(settings: Settings, store: SecretStore | None = None) -> EncryptionCodec | None:
    """The codec, or None when FOLLOWTHROUGH_CODEC=off; CodecNotConfigured when it is on without keys."""
    if settings.codec == "off":
        return None
    accept = settings.codec_accept_plaintext
    if settings.codec_keys:
        return EncryptionCodec(configured_keys(settings, store), accept_plaintext=accept)
    if settings.codec == "local-key":
        return EncryptionCodec([local_key(settings)], accept_plaintext=accept)
    raise CodecNotConfigured(
        "payload encryption is on but FOLLOWTHROUGH_CODEC_KEYS names no key. Either give every worker, API and "
        "command the same keys: FOLLOWTHROUGH_CODEC_KEYS='[\"codec_1\"]' and the key itself (32 random bytes in "
        "base64) in FOLLOWTHROUGH_SECRET_CODEC_1 (or as \"codec_1\" in the JSON file FOLLOWTHROUGH_SECRETS_FILE "
        "names); or, for everything on one machine, FOLLOWTHROUGH_CODEC=local-key (a key generated once in "
        f"{settings.data_dir / LOCAL_KEY_FILE}; what `followthrough dev` uses), or FOLLOWTHROUGH_CODEC=off to "
        "store payloads unencrypted. docs/security.md, \"Encrypted payloads\"")
