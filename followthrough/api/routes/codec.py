"""The remote codec endpoints the Temporal Web UI and CLI call to read encrypted payloads:
``POST /codec/decode`` and ``POST /codec/encode`` (Temporal's codec server protocol).

The body is ``{"payloads": [{"metadata": {name: base64}, "data": base64}]}``, the JSON form of
Temporal's Payloads message; the answer has the same shape. Both need an API key with the
``codec`` role: the keys decrypt every tenant's payloads, so only an operator's key may use them. Cross-origin calls are answered only for the Temporal UI's origin (followthrough/api/codec_cors.py).
"""

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from temporalio.api.common.v1 import Payload

from followthrough.api.auth import PrincipalDep
from followthrough.api.errors import ApiError
from followthrough.api.query_check import any_query
from followthrough.infra.codec import CodecError
from followthrough.domain.principals import Role

PREFIX = "/codec"


async def _operator(principal: PrincipalDep) -> None:
    if not principal.grants(Role.CODEC):
        raise ApiError(403, f"the codec endpoints need a key with the codec role (an operator makes one with "
                            f"`followthrough keys create --role codec ...`); this key has "
                            f"{', '.join(sorted(principal.roles))}")


router = APIRouter(prefix=PREFIX, tags=["codec"], dependencies=[Depends(_operator)])


class CodecPayload(BaseModel):
    metadata: dict[str, str] = Field(default_factory=dict, description="metadata values, base64")
    data: str = Field("", description="the payload's bytes, base64")


class CodecPayloads(BaseModel):
    payloads: list[CodecPayload] = Field(max_length=10_000)


def _bytes(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{where} is not valid base64") from None


def _to_proto(body: CodecPayloads) -> list[Payload]:
    return [Payload(metadata={name: _bytes(value, f"payloads[{i}].metadata.{name}")
                              for name, value in p.metadata.items()},
                    data=_bytes(p.data, f"payloads[{i}].data"))
            for i, p in enumerate(body.payloads)]


def _from_proto(payloads: Sequence[Payload]) -> CodecPayloads:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")
    return CodecPayloads(payloads=[CodecPayload(metadata={k: b64(v) for k, v in p.metadata.items()},
                                                data=b64(p.data)) for p in payloads])


async def _through(request: Request, body: CodecPayloads, direction: str) -> CodecPayloads:
    codec = request.app.state.codec
    payloads = _to_proto(body)
    if codec is None:  # FOLLOWTHROUGH_CODEC=off: payloads are stored as they are
        return _from_proto(payloads)
    # Decoding here only shows payloads, so plain ones are shown as they are stored (EncryptionCodec.reveal).
    run: Callable[[Sequence[Payload]], Awaitable[list[Payload]]] = getattr(
        codec, "reveal" if direction == "decode" and hasattr(codec, "reveal") else direction)
    try:
        return _from_proto(await run(payloads))
    except CodecError as err:
        raise ApiError(422, str(err)) from None


@router.post("/decode", response_model=CodecPayloads, summary="Decrypt payloads (for the Temporal Web UI and CLI)")
@any_query  # the Web UI adds options of its own (?preserveStorageRefs=true)
async def decode(request: Request, body: CodecPayloads) -> CodecPayloads:
    return await _through(request, body, "decode")


@router.post("/encode", response_model=CodecPayloads, summary="Encrypt payloads (for the Temporal Web UI and CLI)")
@any_query
async def encode(request: Request, body: CodecPayloads) -> CodecPayloads:
    return await _through(request, body, "encode")
