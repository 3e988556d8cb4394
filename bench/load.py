"""Load: N task creations sent through the HTTP API all at once, then waited on until they complete.

    python bench/load.py [--tasks 1000] [--database-url URL] [--timeout 600]

One asyncio HTTP client with a connection per request fires every POST /tasks at the same moment
(autonomous invoice_follow_up tasks, one tenant of the run's own). The checks, each a line of the
report, the exit status 1 if any fails:
- every answer is a 201: each status code is counted, a 5xx or a transport error fails the run;
- every created task completes (the mirror's count of completed tasks, through the API);
- the mirror's count of the tenant's tasks (GET /tasks total) equals Temporal's count of the tenant's
  workflows (count_workflows on the TenantId search attribute), and Temporal's count of completed ones
  equals it too.
The engine's limits on creation are off for the run (FOLLOWTHROUGH_RATE_LIMIT_PER_MINUTE=0,
FOLLOWTHROUGH_MAX_TASKS_IN_FLIGHT=0, their defaults); nothing else is raised.
tests/reliability/test_load.py runs the same check on the test suite's dev server.
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stack  # noqa: E402

LIMITS_OFF = {"FOLLOWTHROUGH_RATE_LIMIT_PER_MINUTE": "0", "FOLLOWTHROUGH_MAX_TASKS_IN_FLIGHT": "0"}


@dataclass
class LoadReport:
    tasks: int
    answers: Counter[str] = field(default_factory=Counter)  # status codes, or the transport error's name
    created_seconds: float = 0.0  # until the last answer
    completed_seconds: float = 0.0  # until the mirror showed every created task completed
    mirror_total: int = 0
    mirror_completed: int = 0
    temporal_total: int = 0
    temporal_completed: int = 0

    def failures(self) -> list[str]:
        created = self.answers.get("201", 0)
        found = []
        if server_errors := sum(v for k, v in self.answers.items() if k.startswith("5")):
            found.append(f"{server_errors} answers were 5xx")
        if created != self.tasks:
            found.append(f"{created} of {self.tasks} creations answered 201 ({dict(self.answers)})")
        if self.mirror_completed != self.tasks:
            found.append(f"{self.mirror_completed} of {self.tasks} tasks completed in the mirror")
        if self.mirror_total != self.temporal_total:
            found.append(f"the mirror holds {self.mirror_total} tasks, Temporal {self.temporal_total} workflows")
        if self.temporal_completed != self.tasks:
            found.append(f"{self.temporal_completed} of {self.tasks} workflows completed in Temporal")
        return found

    def lines(self) -> list[str]:
        return [f"answers: {', '.join(f'{k}: {v}' for k, v in sorted(self.answers.items()))}",
                f"all {self.tasks} answered in {self.created_seconds:.1f} s; "
                f"all completed {self.completed_seconds:.1f} s after the first request",
                f"mirror (API): {self.mirror_total} tasks, {self.mirror_completed} completed; "
                f"Temporal: {self.temporal_total} workflows, {self.temporal_completed} completed"]


async def run_load(http: httpx.AsyncClient, temporal: Client, tenant: str, tasks: int,
                   timeout: float = 600) -> LoadReport:
    """Create ``tasks`` tasks at once through ``http`` (an API client whose pool holds that many
    connections), wait up to ``timeout`` seconds for them to complete, and count in both places."""
    report = LoadReport(tasks)
    go = asyncio.Event()

    async def create(i: int) -> None:
        await go.wait()
        try:
            response = await http.post("/tasks", json=stack.task_body(i, tenant))
            report.answers[str(response.status_code)] += 1
        except httpx.HTTPError as err:
            report.answers[type(err).__name__] += 1

    creations = [asyncio.create_task(create(i)) for i in range(tasks)]
    await asyncio.sleep(0)  # every request waits at the gate
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*creations)
    report.created_seconds = time.perf_counter() - start
    created = report.answers.get("201", 0)
    deadline = time.monotonic() + timeout
    while (done := await stack.count(http, tenant, "completed")) < created and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    report.completed_seconds = time.perf_counter() - start
    report.mirror_completed = done
    report.mirror_total = await stack.count(http, tenant)
    # Visibility trails the workflows' ends by a moment: ask again briefly until the counts settle.
    query = f'TenantId="{tenant}"'
    for _ in range(40):
        report.temporal_total = (await temporal.count_workflows(query)).count
        report.temporal_completed = (await temporal.count_workflows(f'{query} AND ExecutionStatus="Completed"')).count
        if report.temporal_completed == report.temporal_total == report.mirror_total:
            break
        await asyncio.sleep(0.25)
    return report


def client_for(api_url: str, tasks: int) -> httpx.AsyncClient:
    """One HTTP client able to hold every request open at once."""
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    return httpx.AsyncClient(base_url=api_url, limits=limits, timeout=httpx.Timeout(120, pool=None))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--database-url", default="", help="mirror database (default: SQLite in a temp dir)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every task to complete")
    parser.add_argument("--workers", type=int, default=1, help="engine worker processes")
    parser.add_argument("--no-sandbox", action="store_true", help="run the engine's workflows unsandboxed")
    args = parser.parse_args()

    stack.compile_sources()
    data_dir = stack.data_folder()
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"
    load_before = os.getloadavg()
    with stack.dev_server(data_dir) as server, \
            stack.engine(server.address, database_url, data_dir, args.workers, not args.no_sandbox,
                         **LIMITS_OFF) as engine:
        temporal = await Client.connect(server.address)
        async with client_for(engine.api_url, args.tasks) as http:
            await stack.warm_up(http)
            report = await run_load(http, temporal, f"bench-load-{uuid.uuid4().hex[:8]}", args.tasks, args.timeout)
    load_after = os.getloadavg()
    mirror = "PostgreSQL" if "postgresql" in database_url else "SQLite"
    print(f"tasks={args.tasks} at once, mirror={mirror}, workers={args.workers}, "
          f"sandbox={'off' if args.no_sandbox else 'on'}, {os.cpu_count()} cores; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    for line in report.lines():
        print(line)
    failures = report.failures()
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
