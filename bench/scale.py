"""Scale: many tasks waiting at once, list queries on a large mirror, timers due together.

    python bench/scale.py [--part memory|queries|timers|all] [--database-url URL] [sizes, see --help]

memory   N review tasks created through the HTTP API and left waiting for approval; the worker's
         resident memory (peak and settled) against a bare Temporal worker holding N bare
         workflows waiting on a signal.
queries  a mirror of N tasks (with their events and approvals) seeded by bulk inserts; p50/p99 of
         the list queries the inbox and clients use, through the HTTP API; --explain prints the plans.
timers   N tasks due at the same instant a little ahead; how late each began drafting
         (the started_at the workflow records against its due_at).

Each part starts its own Temporal dev server and processes; the mirror is SQLite in a temp
folder unless --database-url names another (its tables are dropped and migrated afresh).
"""

import argparse
import asyncio
import compileall
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from sqlalchemy import func, select, text
from sqlmodel import SQLModel
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import scale_seed, stack  # noqa: E402
from bench.stack import ROOT, cpu_seconds, memory_kib, payload, run_bounded  # noqa: E402

from followthrough.api.routes.approvals import may_decide  # noqa: E402
from followthrough.services.task_queries import _ORDER_BY, TaskFilter, TaskOrder  # noqa: E402
from followthrough.db.database import create_engine, is_sqlite  # noqa: E402
from followthrough.domain.lifecycle import TaskStatus  # noqa: E402
from followthrough.db.migrate import upgrade  # noqa: E402
from followthrough.db.tables import Approval, Task, TaskEvent  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def mib(kib: int) -> str:
    return f"{kib / 1024:7.0f} MiB"


async def fresh_mirror(url: str, revision: str = "head") -> None:
    """Drop every mirror table and migrate to ``revision`` (the queries' before/after)."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade(engine, revision)
    await engine.dispose()


class Waiter:
    """Polls a count until it reaches a target, sampling a process's memory meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []

    async def until(self, count, target: int, label: str, timeout: float) -> float:
        start = time.perf_counter()
        last = -1
        while (done := await count()) < target:
            self.samples.append(memory_kib(self.pid)["VmRSS"])
            if done != last and time.perf_counter() - start > 0:
                print(f"  {label}: {done}/{target}  rss {mib(self.samples[-1])}", flush=True)
                last = done
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{label}: {done}/{target} after {timeout:.0f} s")
            await asyncio.sleep(5)
        return time.perf_counter() - start


async def settle(pid: int, seconds: float) -> dict[str, int]:
    """Memory after the load stopped: resident now, the peak so far."""
    await asyncio.sleep(seconds)
    return memory_kib(pid)


RETRIES = {"503": 0}


async def create_task(http: httpx.AsyncClient, body: dict) -> None:
    """POST /tasks as a careful client does: an Idempotency-Key, and on a 503 (the mirror busy past its
    timeout on an overloaded machine) a retry after the Retry-After the API names."""
    key = uuid.uuid4().hex
    while (response := await http.post("/tasks", json=body, headers={"Idempotency-Key": key})).status_code == 503:
        RETRIES["503"] += 1
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()


QUIET = {"FOLLOWTHROUGH_LOG_LEVEL": "WARNING"}  # the API would log every request


def pids(engine: stack.Engine) -> dict[str, int]:
    """The processes by role, and the API's port."""
    port = int(engine.env["FOLLOWTHROUGH_API_PORT"])
    return {"api": engine.api_pid, "port": port} | ({"worker": engine.worker_pids[0]} if engine.worker_pids else {})


# ---- memory ---------------------------------------------------------------------------------

async def memory_bare(address: str, n: int, concurrency: int, cache: int, settle_s: float) -> dict:
    env = os.environ | {"BARE_MAX_CACHED_WORKFLOWS": str(cache)}
    with stack.bare_worker(address, env) as worker:
        queue, pid = worker.task_queue, worker.pid
        client = await Client.connect(address)
        await asyncio.sleep(2)
        idle = memory_kib(pid)["VmRSS"]
        start = time.perf_counter()

        async def one(i: int) -> None:
            await client.start_workflow("BareWaitWorkflow", payload(i), id=f"{queue}-{i}", task_queue=queue)

        await run_bounded(n, concurrency, one)
        query = f'WorkflowType="BareWaitWorkflow" AND TaskQueue="{queue}" AND TaskStatus="awaiting_approval"'

        async def waiting() -> int:
            return (await client.count_workflows(query)).count

        waiter = Waiter(pid)
        await waiter.until(waiting, n, "bare waiting", timeout=3600)
        took = time.perf_counter() - start
        at_end = memory_kib(pid)
        after = await settle(pid, settle_s)
    return {"idle": idle, "at_end": at_end["VmRSS"], "settled": after["VmRSS"], "peak": after["VmHWM"],
            "seconds": took}


async def memory_engine(address: str, n: int, concurrency: int, database_url: str, data_dir: Path, cache: int,
                        sandbox: bool, settle_s: float) -> dict:
    tenant = f"scale-{uuid.uuid4().hex[:8]}"
    with stack.engine(address, database_url, data_dir, sandbox=sandbox, **QUIET,
                      FOLLOWTHROUGH_WORKER_MAX_CACHED_WORKFLOWS=str(cache)) as running:
        procs = pids(running)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{procs['port']}/api/v1", limits=limits,
                                     timeout=120) as http:
            await asyncio.sleep(2)
            idle = memory_kib(procs["worker"])["VmRSS"]
            start = time.perf_counter()

            async def create(i: int) -> None:
                await create_task(http, {
                    "type": "invoice_follow_up", "mode": "review", "tenant_id": tenant,
                    "subject_ref_type": "INVOICE", "subject_ref_id": f"INV-{i}", "payload": payload(i)})

            async def waiting() -> int:
                response = await http.get("/tasks", params={"tenant_id": tenant, "status": "awaiting_approval",
                                                            "limit": 1})
                return response.json()["total"]

            await run_bounded(n, concurrency, create)
            created = time.perf_counter() - start
            print(f"  created {n} tasks in {created:.0f} s ({n / created:.1f}/s)", flush=True)
            await Waiter(procs["worker"]).until(waiting, n, "tasks awaiting approval", timeout=3600)
            took = time.perf_counter() - start
            at_end = memory_kib(procs["worker"])
            after = await settle(procs["worker"], settle_s)
            api = memory_kib(procs["api"])
    return {"idle": idle, "at_end": at_end["VmRSS"], "settled": after["VmRSS"], "peak": after["VmHWM"],
            "seconds": took, "create_rate": n / created, "api_peak": api["VmHWM"]}


async def part_memory(args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
    print(f"== memory: {args.waiting} waiting, max_cached_workflows={args.max_cached_workflows}, "
          f"sandbox={'off' if args.no_sandbox else 'on'}", flush=True)
    with stack.dev_server(data_dir) as server:
        address = server.address
        bare = await memory_bare(address, args.waiting, args.concurrency, args.max_cached_workflows, args.settle)
        engine = await memory_engine(address, args.waiting, args.concurrency, database_url, data_dir,
                                     args.max_cached_workflows, not args.no_sandbox, args.settle)
    print(f"\nworker RSS with {args.waiting} waiting   idle        all waiting  settled ({args.settle:.0f} s)  peak")
    for name, m in (("bare Temporal worker", bare), ("followthrough worker", engine)):
        print(f"  {name:28s} {mib(m['idle'])} {mib(m['at_end'])} {mib(m['settled'])}   {mib(m['peak'])}"
              f"   ({m['seconds']:.0f} s to all waiting)")
    print(f"  API process peak {mib(engine['api_peak'])}; tasks created at {engine['create_rate']:.1f}/s "
          f"by {args.concurrency} concurrent clients")


# ---- queries --------------------------------------------------------------------------------

def query_set(rng: random.Random) -> list[tuple[str, callable]]:
    """(name, () -> (path, params)) for each query; parameters vary per request like real callers."""
    def tenant() -> str:  # the largest tenants are asked most, as their users are more
        return rng.choices(scale_seed.tenants(20), weights=[1 / (i + 1) for i in range(20)])[0]

    def approver() -> str:
        return f"approver-{rng.randrange(scale_seed.APPROVERS)}"

    soon = (datetime.now(timezone.utc) + timedelta(days=7)).isoformat()
    return [
        ("tasks, newest (all tenants)", lambda: ("/api/v1/tasks", {})),
        ("tasks of a tenant, newest", lambda: ("/api/v1/tasks", {"tenant_id": tenant()})),
        ("tenant + status=awaiting_approval", lambda: ("/api/v1/tasks", {"tenant_id": tenant(),
                                                                          "status": "awaiting_approval"})),
        ("tenant + 3 open statuses", lambda: ("/api/v1/tasks", {"tenant_id": tenant(), "status": [
            "pending", "scheduled", "in_progress"]})),
        ("tenant + type", lambda: ("/api/v1/tasks", {"tenant_id": tenant(), "type": rng.choice(scale_seed.TYPES)})),
        ("tenant + owner", lambda: ("/api/v1/tasks", {"tenant_id": tenant(),
                                                      "owner_id": f"user-{rng.randrange(scale_seed.OWNERS)}"})),
        ("tenant, due within a week, order=due", lambda: ("/api/v1/tasks", {
            "tenant_id": tenant(), "due_before": soon, "status": ["scheduled", "awaiting_approval"],
            "order": "due"})),
        ("tenant + awaiting, order=priority", lambda: ("/api/v1/tasks", {
            "tenant_id": tenant(), "status": "awaiting_approval", "order": "priority"})),
        ("status=failed (all tenants)", lambda: ("/api/v1/tasks", {"status": "failed"})),
        ("tenant, page at offset 2000", lambda: ("/api/v1/tasks", {"tenant_id": "tenant-0", "offset": 2000})),
        ("/tasks/stats of a tenant", lambda: ("/api/v1/tasks/stats", {"tenant_id": tenant()})),
        ("/tasks/stats (all tenants)", lambda: ("/api/v1/tasks/stats", {})),
        ("/approvals queue: approver + role", lambda: ("/api/v1/approvals", {"approver": approver(),
                                                                             "role": rng.choice(scale_seed.ROLES)})),
        ("/approvals: approver + tenant", lambda: ("/api/v1/approvals", {"approver": approver(),
                                                                         "tenant_id": tenant()})),
        ("/approvals pending (all)", lambda: ("/api/v1/approvals", {})),
        ("inbox page /ui?as=approver", lambda: ("/ui", {"as": approver()})),
    ]


async def time_queries(port: int, api_pid: int, requests: int,
                       task_ids: list[str]) -> list[tuple[str, float, float, float, float]]:
    """Wall time per request (p50, p99, max) and the API process's CPU per request: on a shared
    machine the wall times carry the other load, the CPU much less of it."""
    rng = random.Random(11)
    queries = query_set(rng) + [
        ("/tasks/{id}", lambda: (f"/api/v1/tasks/{rng.choice(task_ids)}", {})),
        ("/tasks/{id}/events", lambda: (f"/api/v1/tasks/{rng.choice(task_ids)}/events", {})),
    ]
    results = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 headers={"X-Actor-Id": "bench"}) as http:
        for name, make in queries:
            times = []
            for i in range(requests + 5):  # the first five warm the caches and are not counted
                if i == 5:
                    cpu = cpu_seconds(api_pid)
                path, params = make()
                start = time.perf_counter()
                response = await http.get(path, params=params)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                if i >= 5:
                    times.append(elapsed * 1000)
            cpu = (cpu_seconds(api_pid) - cpu) * 1000 / requests
            results.append((name, statistics.median(times), pct(times, 0.99), max(times), cpu))
            print(f"  {name:40s} p50 {results[-1][1]:6.1f} ms  p99 {results[-1][2]:6.1f} ms  "
                  f"max {results[-1][3]:6.1f} ms  API CPU {cpu:5.1f} ms", flush=True)
    return results


def plan_statements() -> list[tuple[str, object]]:
    """The SQL behind the slowest-looking queries, built as the API builds it."""
    tenant = TaskFilter(tenant_id="tenant-3")
    awaiting = TaskFilter(tenant_id="tenant-3", status=[TaskStatus.AWAITING_APPROVAL])
    open_ = TaskFilter(tenant_id="tenant-3", status=[TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.IN_PROGRESS])
    by_type = TaskFilter(tenant_id="tenant-3", type="email")
    failed = TaskFilter(status=[TaskStatus.FAILED])
    queue = select(Approval).where(Approval.status == "pending", may_decide("approver-7", ["finance"]))
    return [
        ("tasks, newest", select(Task).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("count, all tasks", select(func.count()).select_from(Task)),
        ("tenant, newest", tenant.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("tenant + awaiting, newest", awaiting.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("tenant + open statuses", open_.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("tenant + type, newest", by_type.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("count, tenant + type", by_type.apply(select(func.count()).select_from(Task))),
        ("tenant + awaiting, priority",
         awaiting.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.PRIORITY]).limit(50)),
        ("failed, newest", failed.apply(select(Task)).order_by(*_ORDER_BY[TaskOrder.NEWEST]).limit(50)),
        ("stats, tenant", select(Task.status, func.count()).where(Task.tenant_id == "tenant-3").group_by(Task.status)),
        ("stats, oldest approval", select(Approval.task_id, Approval.requested_at, Task.title, Task.type)
         .join(Task, Task.id == Approval.task_id)
         .where(Approval.status == "pending", Task.status == "awaiting_approval")
         .order_by(Approval.requested_at, Approval.id).limit(1)),
        ("tenant, due soon, order=due", TaskFilter(
            tenant_id="tenant-3", status=[TaskStatus.SCHEDULED, TaskStatus.AWAITING_APPROVAL],
            due_before=datetime.now(timezone.utc) + timedelta(days=7)).apply(select(Task))
         .order_by(*_ORDER_BY[TaskOrder.DUE]).limit(50)),
        ("approvals, approver + tenant", queue.where(Approval.tenant_id == "tenant-3")
         .order_by(Approval.requested_at, Approval.id).limit(50)),
        ("approvals queue", queue.order_by(Approval.requested_at, Approval.id).limit(50)),
        ("approvals queue, count", select(func.count()).select_from(queue.subquery())),
        ("events of a task", select(TaskEvent).where(TaskEvent.task_id == "x")
         .order_by(TaskEvent.occurred_at, TaskEvent.seq, TaskEvent.id)),
    ]


async def explain(url: str) -> None:
    engine = create_engine(url)
    prefix = "EXPLAIN QUERY PLAN " if is_sqlite(url) else "EXPLAIN (ANALYZE, BUFFERS OFF) "
    async with engine.connect() as conn:
        for name, statement in plan_statements():
            compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
            params = compiled.construct_params()
            processors = compiled._bind_processors
            values = tuple(processors[k](params[k]) if k in processors else params[k] for k in compiled.positiontup)
            rows = (await conn.exec_driver_sql(prefix + str(compiled), values)).all()
            print(f"-- {name}")
            for row in rows:
                print("   ", row[-1] if is_sqlite(url) else row[0])
    await engine.dispose()


async def analyse(url: str) -> None:
    if not is_sqlite(url):
        # As autovacuum soon would after bulk inserts (PostgreSQL 13 on): statistics, and the visibility map that
        # lets a count read an index alone. SQLite mirrors are never analysed.
        engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE"))
        await engine.dispose()


async def part_queries(args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
    """Seed at --before (if given) and time; then migrate to --revision and time again, same rows."""
    mirror = "PostgreSQL" if "postgresql" in database_url else "SQLite"
    revisions = [r for r in (args.before, args.revision) if r]
    print(f"== queries: {args.rows} tasks on {mirror}, schema at {' then '.join(revisions)}", flush=True)
    await fresh_mirror(database_url, revisions[0])
    engine = create_engine(database_url)
    start = time.perf_counter()
    counts = await scale_seed.seed(engine, args.rows)
    async with engine.connect() as conn:
        task_ids = list((await conn.execute(select(Task.id).limit(2000))).scalars())
    await engine.dispose()
    print(f"  seeded {counts} in {time.perf_counter() - start:.0f} s", flush=True)
    results = {}
    for revision in revisions:
        if revision != revisions[0]:
            engine = create_engine(database_url)
            await upgrade(engine, revision)
            await engine.dispose()
        await analyse(database_url)
        print(f"-- schema at {revision}", flush=True)
        if args.explain:
            await explain(database_url)
        with stack.dev_server(data_dir) as server:
            with stack.engine(server.address, database_url, data_dir, workers=0, migrate=False,
                              **QUIET) as running:
                procs = pids(running)
                results[revision] = await time_queries(procs["port"], procs["api"], args.requests, task_ids)
    print(f"\n{mirror}, {args.rows} tasks, {args.requests} requests each   "
          + "   ".join(f"[{r}] p50 / p99 ms, API CPU ms" for r in revisions))
    for i, row in enumerate(results[revisions[0]]):
        cells = [f"{results[r][i][1]:6.1f} / {results[r][i][2]:6.1f}, {results[r][i][4]:5.1f}" for r in revisions]
        print(f"  {row[0]:40s} " + "       ".join(cells))


# ---- timers ---------------------------------------------------------------------------------

async def part_timers(args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
    lead = args.lead or 30 + args.timers / 10
    print(f"== timers: {args.timers} tasks due together in {lead:.0f} s", flush=True)
    tenant = f"timers-{uuid.uuid4().hex[:8]}"
    with stack.dev_server(data_dir) as server:
        with stack.engine(server.address, database_url, data_dir, **QUIET) as running:
            procs = pids(running)
            due = datetime.now(timezone.utc) + timedelta(seconds=lead)
            limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{procs['port']}/api/v1", limits=limits,
                                         timeout=120) as http:
                async def create(i: int) -> None:
                    await create_task(http, {
                        "type": "invoice_follow_up", "mode": "review", "tenant_id": tenant, "due_at": due.isoformat(),
                        "subject_ref_type": "INVOICE", "subject_ref_id": f"INV-{i}", "payload": payload(i)})

                async def count(status: str) -> int:
                    response = await http.get("/tasks", params={"tenant_id": tenant, "status": status, "limit": 1})
                    return response.json()["total"]

                await run_bounded(args.timers, args.concurrency, create)
                # Every task must be waiting on its timer before the due time, or the run measures nothing.
                while await count("scheduled") < args.timers and datetime.now(timezone.utc) < due:
                    await asyncio.sleep(1)
                scheduled = await count("scheduled")
                ahead = (due - datetime.now(timezone.utc)).total_seconds()
                print(f"  {scheduled}/{args.timers} scheduled, {ahead:.0f} s before the due time", flush=True)
                if scheduled < args.timers:
                    raise SystemExit("not every task was scheduled before its due time: raise --lead")

                async def waiting() -> int:
                    return await count("awaiting_approval")

                await Waiter(procs["worker"]).until(waiting, args.timers, "began drafting and now wait",
                                                    timeout=3600)
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Task.due_at, Task.started_at, TaskEvent.recorded_at)
                                   .join(TaskEvent, TaskEvent.task_id == Task.id)
                                   .where(Task.tenant_id == tenant, TaskEvent.type == "TASK_STATUS_CHANGED",
                                          TaskEvent.new_status == "in_progress"))).all()
    await engine.dispose()
    started = [(r.started_at - r.due_at).total_seconds() for r in rows]
    mirrored = [(r.recorded_at - r.due_at).total_seconds() for r in rows]
    print(f"\nlateness after the due time, {len(rows)} tasks   p50      p99      max")
    for name, values in (("began drafting (started_at)", started), ("in the mirror (event recorded_at)", mirrored)):
        print(f"  {name:36s} {statistics.median(values):6.2f} s {pct(values, 0.99):6.2f} s {max(values):6.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--part", choices=["memory", "queries", "timers", "all"], default="all")
    parser.add_argument("--database-url", default="", help="mirror database (default: SQLite in a temp dir)")
    parser.add_argument("--concurrency", type=int, default=50, help="clients creating tasks at once")
    parser.add_argument("--waiting", type=int, default=10_000, help="memory: tasks waiting for approval")
    parser.add_argument("--max-cached-workflows", type=int, default=1000,
                        help="memory: the workers' workflow cache (FOLLOWTHROUGH_WORKER_MAX_CACHED_WORKFLOWS)")
    parser.add_argument("--no-sandbox", action="store_true", help="memory: run the engine's workflows unsandboxed")
    parser.add_argument("--settle", type=float, default=60, help="memory: seconds to wait before the settled sample")
    parser.add_argument("--rows", type=int, default=100_000, help="queries: tasks in the mirror")
    parser.add_argument("--requests", type=int, default=200, help="queries: timed requests per query")
    parser.add_argument("--revision", default="head", help="queries: schema revision to time")
    parser.add_argument("--before", default="", help="queries: time at this revision first (e.g. 0009), "
                                                     "then migrate the same rows to --revision and time again")
    parser.add_argument("--explain", action="store_true", help="queries: print the query plans")
    parser.add_argument("--timers", type=int, default=1000, help="timers: tasks due at the same instant")
    parser.add_argument("--lead", type=float, default=0, help="timers: seconds until they are due "
                                                               "(default 30 + tasks/10)")
    args = parser.parse_args()

    # As in throughput.py: compile once so the sandbox does not recompile the workflow modules each run.
    compileall.compile_dir(str(ROOT), quiet=1, rx=re.compile(r"[/\\](\.venv|\.git|tests)[/\\]"))
    data_dir = Path(tempfile.mkdtemp(prefix="followthrough-scale-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"
    print(f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    parts = ["memory", "queries", "timers"] if args.part == "all" else [args.part]
    for part in parts:
        if part != "queries":
            await fresh_mirror(database_url)
        await {"memory": part_memory, "queries": part_queries, "timers": part_timers}[part](args, data_dir,
                                                                                           database_url)
        if RETRIES["503"]:
            print(f"({RETRIES['503']} creations answered 503 and were retried after Retry-After)")
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
