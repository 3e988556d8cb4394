"""/tasks/{id}/report: an agent task's report (figures, answer, transcript) as JSON, Markdown or HTML."""

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response

from followthrough.api.auth import require
from followthrough.api.deps import SessionDep
from followthrough.api.errors import CONFLICT, NOT_FOUND, ApiError
from followthrough.api.lookups import task_row_or_404
from followthrough.tasktypes.agent_report import MEDIA_TYPES, agent_report, render_agent_report
from followthrough.domain.principals import Role

router = APIRouter(prefix="/tasks", tags=["tasks"])


REPORT = {200: {"description": "The report, in the format asked for (409: not an agent task)",
                "content": {"application/json": {"schema": {"type": "object"}},
                            "text/markdown": {"schema": {"type": "string"}},
                            "text/html": {"schema": {"type": "string"}}}}}


@router.get("/{task_id}/report", dependencies=[require(Role.VIEWER)], responses=REPORT | NOT_FOUND | CONFLICT,
            response_class=Response)
async def get_agent_report(task_id: str, session: SessionDep,
                           format: Literal["json", "markdown", "html"] = Query("markdown")) -> Response:
    """The report of an agent task: status, how it ended, turns, messages, tool calls (by tool, refused ones
    too), token usage, duration, its answer and the transcript. While it runs, the figures so far are
    missing (the transcript is recorded when it ends)."""
    row = await task_row_or_404(session, task_id)
    if row.type != "agent":
        raise ApiError(409, f"only agent tasks have a report; this task is of type {row.type!r}")
    report = agent_report(jsonable_encoder(row.model_dump()))
    return Response(render_agent_report(report, format), media_type=MEDIA_TYPES[format])
