"""Error responses: JSON with a short ``detail``; the services' refusals (followthrough/services/errors.py)
and Temporal failures mapped by type."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.services import errors as service

log = logging.getLogger("followthrough.api")

_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}


class ErrorPublic(BaseModel):
    """An error: ``detail`` says what was wrong (a sentence, or for invalid input a list of located errors);
    some errors add fields, such as the id of the task a duplicate matched."""

    model_config = ConfigDict(extra="allow")

    detail: Any


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description}


# Answers any API operation may give, declared on every route.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A URL with a NUL character, or a Content-Length that is not a number"),
    401: _error("No API key, or one that is not valid"),
    403: _error("The key lacks the role the operation needs"),
    413: _error("The request body is larger than FOLLOWTHROUGH_MAX_BODY_BYTES"),
    503: _error("The task database or Temporal is unavailable; retry after Retry-After seconds"),
}
NOT_FOUND = {404: _error("No such resource")}
CONFLICT = {409: _error("A transition the resource cannot take, or a duplicate")}
LIMITED = {429: _error("Over the tenant's creation rate or tasks in flight; retry after Retry-After seconds")}


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None,
                 **extra: object) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        self.extra = extra


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what} {ident!r} not found")


_STATUS: dict[type[service.ServiceError], int] = {
    service.NotFound: 404, service.Forbidden: 403, service.Conflict: 409, service.Invalid: 422,
    service.TooManyRequests: 429, service.Unavailable: 503,
}


def status_of(err: service.ServiceError) -> int:
    """The HTTP status a service's refusal is answered with."""
    return next((status for kind, status in _STATUS.items() if isinstance(err, kind)), 500)


def headers_of(err: service.ServiceError) -> dict[str, str] | None:
    retry_after = getattr(err, "retry_after", None)
    return None if retry_after is None else {"Retry-After": str(retry_after)}


def detail_of(err: service.ServiceError) -> Any:
    """What ``detail`` says: the located errors of invalid input, else the sentence."""
    if isinstance(err, service.Invalid) and err.errors is not None:
        return jsonable_encoder(err.errors)
    return err.message


def _json_safe(value: Any) -> Any:
    """Echoed input can hold what JSON cannot (infinity, NaN); say what it was instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _openapi_errors(app: FastAPI) -> None:
    """Invalid input is answered 422 with a list of located errors, or a sentence when the input is wrong
    as a whole (an Idempotency-Key reused, a value the database refused): the schema says both."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            shapes = document.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in shapes:
                located = shapes["HTTPValidationError"]["properties"]["detail"]
                shapes["HTTPValidationError"]["properties"]["detail"] = {
                    "anyOf": [located, {"type": "string"}], "title": "Detail"}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _openapi_errors(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(service.ServiceError)
    async def _refused(_request: Request, exc: service.ServiceError) -> JSONResponse:
        if isinstance(exc, service.Invalid) and exc.errors is not None:
            return JSONResponse({"detail": _json_safe(detail_of(exc))}, status_code=422)
        return JSONResponse({"detail": exc.message, **exc.extra}, status_code=status_of(exc),
                            headers=headers_of(exc))

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RPCError)
    async def _rpc_error(_request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in _UNAVAILABLE:
            return JSONResponse({"detail": "Temporal is unavailable; try again shortly"}, status_code=503,
                                headers={"Retry-After": "5"})
        log.exception("unexpected Temporal error", exc_info=exc)
        return JSONResponse({"detail": "internal error talking to Temporal"}, status_code=500)

    @app.exception_handler(DataError)
    async def _bad_value(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value it was given to compare or store: the client's input.
        return JSONResponse({"detail": f"a value was refused by the database: {exc.orig}"}, status_code=422)

    # asyncpg reports a refused connection as a bare OSError, not a DBAPIError.
    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    async def _db_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("mirror database unavailable: %s", exc)
        return JSONResponse({"detail": "the task database is unavailable; try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})
