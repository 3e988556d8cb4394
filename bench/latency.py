"""Latency at a steady request rate: followthrough through its HTTP API versus bare Temporal, in one run.

    python bench/latency.py [--rate 10] [--duration 60] [--approve-after 2] [--database-url URL]

Open loop: request i is sent at i / rate seconds whatever the earlier ones are doing, so a slow answer
cannot hold the load back. Every other task is autonomous, the rest are review-mode tasks, each approved
``--approve-after`` seconds after its creation (or as soon as it waits for approval, if later).

Measured, engine side (API and worker processes as `followthrough dev` runs them, SQLite mirror):
- POST /tasks: from sending the request to its answer, at the client.
- approve → sent: from the start of the approve request (client clock) to the ``occurred_at`` of the
  task's TASK_EXECUTION_COMPLETED event, which the workflow stamps with workflow.now() in the workflow
  task that receives the send activity's result. Same machine, same clock.
- mirror lag: for every event a workflow emitted, its ``recorded_at`` (when the worker's mirror write ran)
  minus its ``occurred_at`` (when the workflow emitted it); and, as a client sees it, the moment the event
  arrived on GET /events/stream (which polls the mirror every FOLLOWTHROUGH_STREAM_POLL_SECONDS) minus
  its ``occurred_at``.
Bare side, same dev server, same rate and mix: client.start_workflow of BareLocalWorkflow (the same
number of activities as an autonomous task) and BareApprovalWorkflow, approved by a Workflow Update the
same way, its send's completion stamped the same way (bench/bare.py).
"""

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stack  # noqa: E402
from followthrough.db.database import create_engine  # noqa: E402
from followthrough.db.tables import Task, TaskEvent  # noqa: E402

# The goals at 10 creations/s: p99 of the request, of approve -> sent, of the mirror's lag.
CREATE_TARGET_MS, APPROVE_TARGET_MS, MIRROR_TARGET_MS = 50, 200, 100
_RPC_TIMEOUT = timedelta(seconds=60)  # as patient as the engine side's HTTP client


def percentile(values: list[float], p: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def row(name: str, ms: list[float], target: float | None = None) -> str:
    p50, p95, p99 = (percentile(ms, p) for p in (50, 95, 99))
    verdict = "" if target is None else ("  met" if p99 < target else "  MISSED") + f" (p99 < {target} ms)"
    return (f"  {name:44s} {len(ms):5d} {p50:8.1f} {p95:8.1f} {p99:8.1f} {max(ms, default=math.nan):8.1f}"
            + verdict)


async def open_loop(rate: float, duration: float, job: Callable[[int], Awaitable[None]], errors: Counter) -> None:
    """Start job(i) at i / rate seconds from now, for duration seconds, and wait for all of them; a job
    that raises is counted in ``errors`` by its exception's name."""
    start, jobs = time.perf_counter(), []

    async def counted(i: int) -> None:
        try:
            await job(i)
        except Exception as err:  # noqa: BLE001 - reported with the results
            errors[f"error {type(err).__name__}"] += 1

    for i in range(int(rate * duration)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.append(asyncio.create_task(counted(i)))
    await asyncio.gather(*jobs)


class Results:
    def __init__(self) -> None:
        self.create_ms: list[float] = []
        self.approve_ms: list[float] = []  # the approve request itself
        self.approve_to_sent_ms: list[float] = []
        self.codes: Counter[str] = Counter()


async def bare_side(server: stack.Server, rate: float, duration: float, approve_after: float) -> Results:
    out = Results()
    with stack.bare_worker(server.address) as worker:
        client = await Client.connect(server.address)
        queue = worker.task_queue
        await client.execute_workflow("BareLocalWorkflow", stack.payload(0), id=f"{queue}-warm", task_queue=queue)

        async def one(i: int) -> None:
            review = i % 2 == 1
            began = time.perf_counter()
            handle = await client.start_workflow("BareApprovalWorkflow" if review else "BareLocalWorkflow",
                                                 stack.payload(i), id=f"{queue}-{i}", task_queue=queue)
            out.create_ms.append(1000 * (time.perf_counter() - began))
            if not review:
                await handle.result()
                return
            await asyncio.sleep(max(0.0, began + approve_after - time.perf_counter()))
            while not await handle.query("drafted", result_type=bool, rpc_timeout=_RPC_TIMEOUT):
                await asyncio.sleep(0.05)
            approved_at, began = time.time(), time.perf_counter()
            await handle.execute_update("approve", result_type=str, rpc_timeout=_RPC_TIMEOUT)
            out.approve_ms.append(1000 * (time.perf_counter() - began))
            sent = datetime.fromisoformat(await handle.result()).timestamp()
            out.approve_to_sent_ms.append(1000 * (sent - approved_at))

        await open_loop(rate, duration, one, out.codes)
    return out


class EventWatch:
    """GET /events/stream for one tenant: when each event arrived, and waiters for the ones wanted."""

    def __init__(self, http: httpx.AsyncClient, tenant: str) -> None:
        self.http, self.tenant = http, tenant
        self.arrivals: list[tuple[float, dict]] = []  # (time.time() at arrival, the event)
        self._seen: dict[tuple[str, str], dict] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.open = asyncio.Event()

    async def run(self) -> None:
        async with self.http.stream("GET", "/events/stream", params={"tenant_id": self.tenant},
                                    timeout=httpx.Timeout(10, read=None)) as response:
            response.raise_for_status()
            self.open.set()
            kind = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "task_event":
                    event = json.loads(line[6:])
                    self.arrivals.append((time.time(), event))
                    key = (event["task_id"], event["type"])
                    self._seen[key] = event
                    if (waiter := self._waiters.pop(key, None)) is not None and not waiter.done():
                        waiter.set_result(event)

    async def wait_for(self, task_id: str, event_type: str) -> dict:
        key = (task_id, event_type)
        if key in self._seen:
            return self._seen[key]
        waiter = self._waiters.setdefault(key, asyncio.get_running_loop().create_future())
        return await waiter


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def engine_side(server: stack.Server, rate: float, duration: float, approve_after: float,
                      database_url: str, data_dir: Path, workers: int, sandbox: bool,
                      ) -> tuple[Results, list[float], list[float], stack.Engine]:
    out = Results()
    tenant = f"bench-lat-{uuid.uuid4().hex[:8]}"
    with stack.engine(server.address, database_url, data_dir, workers, sandbox) as engine:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=engine.api_url, limits=limits, timeout=60) as http:
            await stack.warm_up(http)
            watch = EventWatch(http, tenant)
            watching = asyncio.create_task(watch.run())
            await asyncio.wait_for(watch.open.wait(), 30)

            async def one(i: int) -> None:
                review = i % 2 == 1
                began = time.perf_counter()
                response = await http.post("/tasks", json=stack.task_body(i, tenant, "review" if review
                                                                            else "autonomous"))
                out.create_ms.append(1000 * (time.perf_counter() - began))
                out.codes[f"POST /tasks {response.status_code}"] += 1
                if response.status_code != 201 or not review:
                    return
                task_id = response.json()["id"]
                await asyncio.sleep(max(0.0, began + approve_after - time.perf_counter()))
                await watch.wait_for(task_id, "TASK_APPROVAL_REQUESTED")
                approved_at, began = time.time(), time.perf_counter()
                response = await http.post(f"/tasks/{task_id}/approve", json={"comment": "bench"})
                out.approve_ms.append(1000 * (time.perf_counter() - began))
                out.codes[f"POST /approve {response.status_code}"] += 1
                if response.status_code == 200:
                    sent = await watch.wait_for(task_id, "TASK_EXECUTION_COMPLETED")
                    out.approve_to_sent_ms.append(1000 * (stamp(sent["occurred_at"]) - approved_at))

            loop = asyncio.create_task(open_loop(rate, duration, one, out.codes))
            if not (await asyncio.wait([loop], timeout=duration + 300))[0]:
                # Saturated: report what finished rather than nothing.
                loop.cancel()
                out.codes["requests unfinished after the load + 300 s (saturated)"] += 1
            n = int(rate * duration)
            deadline = time.monotonic() + 120
            while await stack.count(http, tenant, "completed") < n and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(2 * float(engine.env.get("FOLLOWTHROUGH_STREAM_POLL_SECONDS", "0.5")))
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            completed = await stack.count(http, tenant, "completed")
            out.codes[f"completed {completed} of {n}"] += 1
    # Events the API itself wrote (TASK_CREATED, in the request) are not the worker's: left out.
    seen_ms = [1000 * (arrived - stamp(e["occurred_at"])) for arrived, e in watch.arrivals
               if e["type"] != "TASK_CREATED"]
    db = create_engine(database_url)
    try:
        async with db.connect() as conn:
            rows = (await conn.execute(
                select(TaskEvent.occurred_at, TaskEvent.recorded_at).join(Task, Task.id == TaskEvent.task_id)
                .where(Task.tenant_id == tenant, TaskEvent.type != "TASK_CREATED"))).all()
    finally:
        await db.dispose()
    recorded_ms = [1000 * (r.recorded_at - r.occurred_at).total_seconds() for r in rows]
    return out, recorded_ms, seen_ms, engine


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10, help="task creations per second (default 10)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load per side (default 60)")
    parser.add_argument("--approve-after", type=float, default=2.0,
                        help="seconds after its creation a review task is approved (default 2)")
    parser.add_argument("--database-url", default="", help="mirror database (default: SQLite in a temp dir)")
    parser.add_argument("--workers", type=int, default=1, help="engine worker processes")
    parser.add_argument("--no-sandbox", action="store_true", help="run the engine's workflows unsandboxed")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Temporal baseline")
    args = parser.parse_args()

    stack.compile_sources()
    data_dir = stack.data_folder()
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"
    load_before = os.getloadavg()
    with stack.dev_server(data_dir) as server:
        bare = None if args.no_bare else await bare_side(server, args.rate, args.duration, args.approve_after)
        engine, recorded_ms, seen_ms, _ = await engine_side(
            server, args.rate, args.duration, args.approve_after, database_url, data_dir, args.workers,
            not args.no_sandbox)
    load_after = os.getloadavg()

    mirror = "PostgreSQL" if "postgresql" in database_url else "SQLite"
    print(f"rate={args.rate:g} creations/s for {args.duration:g} s per side (half review-mode, approved "
          f"{args.approve_after:g} s after creation), mirror={mirror}, workers={args.workers}, "
          f"sandbox={'off' if args.no_sandbox else 'on'}, {os.cpu_count()} cores")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"\n  {'latency, ms':44s} {'n':>5s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}")
    print(row("POST /tasks", engine.create_ms, CREATE_TARGET_MS))
    if bare:
        print(row("bare: client.start_workflow", bare.create_ms))
    print(row("POST /tasks/{id}/approve (the request)", engine.approve_ms))
    if bare:
        print(row("bare: execute_update approve", bare.approve_ms))
    print(row("approve -> send completed", engine.approve_to_sent_ms, APPROVE_TARGET_MS))
    if bare:
        print(row("bare: update -> send activity completed", bare.approve_to_sent_ms))
    print(row("mirror lag: occurred -> recorded", recorded_ms, MIRROR_TARGET_MS))
    print(row("mirror lag: occurred -> seen on /events/stream", seen_ms))
    print("\n  " + ", ".join(f"{k}: {v}" for k, v in sorted(engine.codes.items())))
    if bare and bare.codes:
        print("  bare: " + ", ".join(f"{k}: {v}" for k, v in sorted(bare.codes.items())))


if __name__ == "__main__":
    asyncio.run(main())
