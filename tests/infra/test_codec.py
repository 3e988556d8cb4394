"""The payload codec and its keys: encryption, rotation, unknown keys, plain payloads refused (or
accepted in the migration window), and which settings make which codec (or refuse to)."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import default
from temporalio.exceptions import ApplicationError

from followthrough.infra.codec import ENCODING, KEY_ID, REFUSED, CodecError, CodecKey, EncryptionCodec, data_converter
from followthrough.infra.codec_keys import LOCAL_KEY_FILE, CodecNotConfigured, codec_for
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.config.settings import Settings

KEY_A, KEY_B = CodecKey("a", os.urandom(32)), CodecKey("b", os.urandom(32))
ROOT = Path(__file__).resolve().parents[2]


def plain(text: str) -> Payload:
    return default().payload_converter.to_payloads([text])[0]


async def test_encrypts_with_the_first_key_and_round_trips():
    codec = EncryptionCodec([KEY_A])
    original = plain("secret customer")
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"a"
    assert b"secret customer" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [original]
    [again] = await codec.encode([original])
    assert again.data[:12] != sealed.data[:12]  # a fresh nonce every time


async def test_rotation_new_key_encrypts_old_key_still_decrypts():
    [old] = await EncryptionCodec([KEY_A]).encode([plain("from before the rotation")])
    rotated = EncryptionCodec([KEY_B, KEY_A])
    assert await rotated.decode([old]) == [plain("from before the rotation")]
    [new] = await rotated.encode([plain("after")])
    assert new.metadata[KEY_ID] == b"b"
    with pytest.raises(CodecError, match="codec key 'b'.*not configured"):
        await EncryptionCodec([KEY_A]).decode([new])


async def test_tampered_or_relabelled_payloads_are_refused():
    codec = EncryptionCodec([KEY_A, KEY_B])
    [sealed] = await codec.encode([plain("x")])
    flipped = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(CodecError, match="does not authenticate"):
        await codec.decode([flipped])
    relabelled = Payload(metadata={"encoding": ENCODING, KEY_ID: b"b"}, data=sealed.data)
    with pytest.raises(CodecError, match="does not authenticate"):
        await codec.decode([relabelled])
    with pytest.raises(CodecError, match="too short"):
        await codec.decode([Payload(metadata={"encoding": ENCODING, KEY_ID: b"a"}, data=b"short")])


async def test_plain_payloads_are_refused_unless_accepted():
    """A payload without the encryption is refused: the converter raises a non-retryable error naming the
    setting; the migration window (accept_plaintext) reads them as they are, and the endpoint shows them."""
    payloads = [plain("old"), default().payload_converter.to_payloads([None])[0]]
    codec = EncryptionCodec([KEY_A])
    refused = await codec.decode(payloads)
    assert [p.metadata["encoding"] for p in refused] == [REFUSED, REFUSED]
    assert all(not p.data for p in refused)
    with pytest.raises(ApplicationError, match="unencrypted payload.*FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT") as err:
        await data_converter(codec).decode(payloads)
    assert err.value.non_retryable and err.value.type == "UnencryptedPayload"
    assert await codec.reveal(payloads) == payloads
    accepting = EncryptionCodec([KEY_A], accept_plaintext=True)
    assert await accepting.decode(payloads) == payloads
    assert await data_converter(accepting).decode(payloads) == ["old", None]
    [sealed] = await codec.encode([plain("new")])
    assert await data_converter(codec).decode([sealed]) == ["new"]


def test_the_accept_plaintext_setting_reaches_the_codec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert codec_for(Settings(codec="local-key", data_dir=tmp_path)).accept_plaintext is False
    monkeypatch.setenv("FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT", "true")
    assert codec_for(Settings(codec="local-key", data_dir=tmp_path)).accept_plaintext is True


async def test_failure_messages_are_encoded():
    converter = data_converter(EncryptionCodec([KEY_A]))
    failure = Failure()
    await converter.encode_failure(RuntimeError("card 4111 declined for Jane Roe"), failure)
    assert "Jane Roe" not in str(failure) and failure.message == "Encoded failure"
    assert "Jane Roe" in str(await converter.decode_failure(failure))


def test_keys_must_be_32_bytes_and_unique():
    with pytest.raises(ValueError, match="32"):
        CodecKey("short", b"x" * 16)
    with pytest.raises(ValueError, match="unique"):
        EncryptionCodec([KEY_A, CodecKey("a", os.urandom(32))])


# ---- settings -----------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_keys_come_from_named_secrets(tmp_path: Path):
    store = SecretStore(environ={"FOLLOWTHROUGH_SECRET_CODEC_2025": _b64(KEY_B.key),
                                 "FOLLOWTHROUGH_SECRET_CODEC_OLD": base64.urlsafe_b64encode(KEY_A.key).decode()})
    settings = Settings(data_dir=tmp_path, codec_keys=["codec_2025", {"id": "a", "secret": "codec_old"}])
    codec = codec_for(settings, store)
    assert codec is not None and codec.key_ids == ["codec_2025", "a"] and codec.encrypting_id == "codec_2025"


def test_missing_or_malformed_key_secrets_say_which(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, codec_keys=["codec_k"])
    with pytest.raises(SecretNotFound, match="codec_k"):
        codec_for(settings, SecretStore(environ={}))
    with pytest.raises(ValueError, match="'codec_k' is not base64"):
        codec_for(settings, SecretStore(environ={"FOLLOWTHROUGH_SECRET_CODEC_K": "not base64!"}))
    with pytest.raises(ValueError, match="holding codec key 'codec_k' is empty"):
        codec_for(settings, SecretStore(environ={"FOLLOWTHROUGH_SECRET_CODEC_K": ""}))
    with pytest.raises(ValueError, match="16 bytes; it must be 32"):
        codec_for(settings, SecretStore(environ={"FOLLOWTHROUGH_SECRET_CODEC_K": _b64(os.urandom(16))}))


def test_without_keys_encryption_refuses_unless_off_or_local(tmp_path: Path):
    with pytest.raises(CodecNotConfigured, match="FOLLOWTHROUGH_CODEC_KEYS") as refused:
        codec_for(Settings(data_dir=tmp_path))
    # Both ways out, for someone who installed the package and knows nothing else: keys (the list and
    # where the secret goes), or one machine's generated key (where it is) or no encryption.
    message = str(refused.value)
    for way in ("FOLLOWTHROUGH_CODEC_KEYS='[\"codec_1\"]'", "FOLLOWTHROUGH_SECRET_CODEC_1", "FOLLOWTHROUGH_SECRETS_FILE",
                "FOLLOWTHROUGH_CODEC=local-key", str(tmp_path / LOCAL_KEY_FILE), "FOLLOWTHROUGH_CODEC=off",
                'docs/security.md, "Encrypted payloads"'):
        assert way in message, way
    assert codec_for(Settings(data_dir=tmp_path, codec="off")) is None
    assert not (tmp_path / LOCAL_KEY_FILE).exists()
    first = codec_for(Settings(data_dir=tmp_path, codec="local-key"))
    second = codec_for(Settings(data_dir=tmp_path, codec="local-key"))
    assert first is not None and second is not None and first.key_ids == second.key_ids
    assert first.key_ids[0].startswith("local-")
    assert (tmp_path / LOCAL_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_codec_keys_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FOLLOWTHROUGH_CODEC_KEYS", '["new", {"id": "old", "secret": "codec_old"}]')
    monkeypatch.setenv("FOLLOWTHROUGH_CODEC", "on")
    settings = Settings()
    assert [getattr(k, "id", k) for k in settings.codec_keys] == ["new", "old"]


@pytest.mark.parametrize("command", ["worker", "api"])
def test_worker_and_api_refuse_to_start_without_keys(command: str, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "followthrough.cli", command], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FOLLOWTHROUGH_CODEC_KEYS" in done.stderr and "FOLLOWTHROUGH_CODEC=off" in done.stderr
    assert "FOLLOWTHROUGH_CODEC=local-key" in done.stderr and "FOLLOWTHROUGH_SECRET_CODEC_1" in done.stderr
