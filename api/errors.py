"""Error responses: JSON with a short ``detail``; Temporal failures mapped by type."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("followthrough.api")

_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}


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


def update_refused(err: WorkflowUpdateFailedError) -> ApiError:
    """The workflow's validator refused the decision: 403 for someone not allowed to decide, else 409."""
    cause = err.cause
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    forbidden = isinstance(cause, ApplicationError) and cause.type == "NotAllowed"
    return ApiError(403 if forbidden else 409, message)


def decision_failure(err: RPCError, status: str) -> Exception:
    """An RPC error answering a decision on an existing task, as the error to raise."""
    if err.status == RPCStatusCode.NOT_FOUND:
        # The workflow has already closed: the task exists but can take no decision.
        return ApiError(409, f"task is already {status}" if status else "task has already finished")
    return err


def _json_safe(value: Any) -> Any:
    """Echoed input can hold what JSON cannot (infinity, NaN); say what it was instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

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
