"""/healthz: is Temporal reachable, is the mirror database reachable."""

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from followthrough.api.deps import SessionDep, TemporalDep
from followthrough.api.schemas import HealthPublic

router = APIRouter(tags=["health"])

_PROBE_TIMEOUT = 3.0


@router.get("/healthz", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def healthz(session: SessionDep, temporal: TemporalDep) -> JSONResponse:
    async def database() -> str:
        await session.execute(text("SELECT 1"))
        return "ok"

    async def temporal_server() -> str:
        await temporal.service_client.check_health(timeout=timedelta(seconds=_PROBE_TIMEOUT))
        return "ok"

    results = {}
    for name, probe in {"database": database, "temporal": temporal_server}.items():
        try:
            results[name] = await asyncio.wait_for(probe(), _PROBE_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - any failure means unhealthy
            results[name] = f"unavailable: {type(err).__name__}"
    healthy = all(v == "ok" for v in results.values())
    body = HealthPublic(status="ok" if healthy else "unavailable", **results)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
