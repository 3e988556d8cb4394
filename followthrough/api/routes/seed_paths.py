"""The paths of the systems followthrough replaces that it does not serve: each answers 404 (405 for a method
ours lacks) with ``detail`` saying what to call instead and ``use``, that call (docs/api.md: Calls of the
systems followthrough replaces). What they share with ours works as written under /api/v1."""

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from followthrough.api.query_check import any_query
from followthrough.domain.seed_vocabulary import QUERY_ALIASES
from followthrough.services.results import API_PREFIX

router = APIRouter(include_in_schema=False)


def _directions(status_code: int, use: str, why: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": f"{why}: use {use}", "use": use}, status_code=status_code, headers=headers)


def _list_query(request: Request) -> str:
    """The query of a seed's task list, in our names, for the list of ours it maps onto."""
    pairs = [(QUERY_ALIASES.get(k, k), v) for k, v in request.query_params.multi_items()]
    return f"?{urlencode(pairs)}" if pairs else ""


# Seed 001: /api/agents/tasks (agent_id and task_type filters, run, the v1 task types).
@router.get("/api/agents/tasks")
@any_query
async def agent_tasks(request: Request) -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/tasks{_list_query(request)}",
                       "agent tasks are tasks (agent_id is owner_id, task_type is type; both are accepted)")


@router.get("/api/agents/tasks/types")
@any_query
async def agent_task_types() -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/task-types", "the task types are listed under /task-types")


@router.get("/api/agents/tasks/{ref}")
@any_query
async def agent_task(ref: str) -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/tasks/{ref}", "agent tasks are tasks")


@router.post("/api/agents/tasks/{ref}/run")
@any_query
async def agent_task_run(ref: str) -> JSONResponse:
    return _directions(404, f"POST {API_PREFIX}/tasks/{ref}/run (or POST {API_PREFIX}/tasks/{ref}/retry for a "
                            f"failed one)", "agent tasks are tasks")


# Seed 002: /api/tasks/execute (a task runs when it is created; this asked for a run).
@router.post("/api/tasks/execute")
@any_query
async def execute_task() -> JSONResponse:
    return _directions(404, f"POST {API_PREFIX}/tasks/{{taskId}}/run (or /retry for a failed task)",
                       "a task runs once created and due; to run one now")


@router.get("/api/tasks/execute")
@any_query
async def executable_tasks() -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/tasks?status=pending&status=scheduled&order=priority",
                       "tasks not yet started are listed by status")


# Seed 003: its "tasks" are our task definitions, its executions our tasks.
@router.post(f"{API_PREFIX}/tasks/{{ref}}/execute")
@any_query
async def execute_definition(ref: str) -> JSONResponse:
    return _directions(404, f"POST {API_PREFIX}/definitions/{ref}/run with {{\"variables\": {{...}}}}",
                       "a template with {{variables}} is a task definition")


@router.get(f"{API_PREFIX}/tasks/{{ref}}/executions")
@any_query
async def definition_executions(ref: str) -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/definitions/{ref}/runs",
                       "the tasks a definition created are its runs")


@router.get(f"{API_PREFIX}/task-executions/{{ref}}")
@any_query
async def execution(ref: str) -> JSONResponse:
    return _directions(404, f"GET {API_PREFIX}/tasks/{ref}", "an execution of a definition is a task")


@router.delete(f"{API_PREFIX}/tasks/{{ref}}")
@any_query
async def delete_task(ref: str) -> JSONResponse:
    return _directions(405, f"POST {API_PREFIX}/tasks/{ref}/cancel (a definition: DELETE "
                            f"{API_PREFIX}/definitions/{ref})", "tasks are kept on record, never deleted",
                       {"Allow": "GET, PATCH"})
