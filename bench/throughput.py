"""End-to-end throughput: followthrough tasks through the HTTP API versus bare
Temporal workflows with the same number of activities, on one dev server, in one run.

    python bench/throughput.py [--tasks 500] [--concurrency 50] [--workers 1] [--apis 1] [--database-url URL]

Each side gets a fresh worker process; the engine side also gets its API
process. A task counts as done when the mirror shows it completed; a bare
workflow when its result arrives. Prints tasks/s for both and their ratio.
"""

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stack  # noqa: E402


async def bench_bare(server: stack.Server, n: int, concurrency: int,
                     workflow_name: str) -> tuple[float, dict[str, float]]:
    with stack.bare_worker(server.address) as worker:
        queue = worker.task_queue
        meter = stack.CpuMeter({"worker": worker.pid, "temporal": server.pid, "client": os.getpid()})
        client = await Client.connect(server.address)
        # Warm up the worker so both sides are measured hot.
        await client.execute_workflow(workflow_name, stack.payload(0), id=f"{queue}-warm", task_queue=queue)
        meter.start()
        start = time.perf_counter()

        async def one(i: int) -> None:
            await client.execute_workflow(workflow_name, stack.payload(i), id=f"{queue}-{i}", task_queue=queue)

        await stack.run_bounded(n, concurrency, one)
        rate = n / (time.perf_counter() - start)
        meter.stop()
        return rate, meter.spent


async def bench_engine(server: stack.Server, n: int, concurrency: int, database_url: str, data_dir: Path,
                       workers: int, sandbox: bool, apis: int = 1) -> tuple[float, dict[str, float]]:
    with stack.engine(server.address, database_url, data_dir, workers, sandbox, apis=apis) as engine:
        tenant = f"bench-{os.urandom(4).hex()}"
        meter = stack.CpuMeter({"temporal": server.pid, "client": os.getpid()}
                               | {f"api{i}": pid for i, pid in enumerate(engine.api_pids)}
                               | {f"worker{i}": pid for i, pid in enumerate(engine.worker_pids)})
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with contextlib.AsyncExitStack() as clients:
            # Creations go round the API processes, as a load balancer in front of them would send them.
            https = [await clients.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits, timeout=60))
                     for url in engine.api_urls]
            http = https[0]

            async def create(i: int) -> None:
                (await https[i % len(https)].post("/tasks", json=stack.task_body(i, tenant))).raise_for_status()

            for each in https:
                await stack.warm_up(each)
            meter.start()
            start = time.perf_counter()
            await stack.run_bounded(n, concurrency, create)
            while (done := await stack.count(http, tenant, "completed")) < n:
                await asyncio.sleep(0.25)
            rate = done / (time.perf_counter() - start)
            meter.stop()
            return rate, meter.spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database-url", default="", help="mirror database (default: SQLite in a temp dir)")
    parser.add_argument("--workers", type=int, default=1, help="engine worker processes")
    parser.add_argument("--apis", type=int, default=1, help="engine API processes, creations sent round them")
    parser.add_argument("--no-sandbox", action="store_true", help="run the engine's workflows unsandboxed")
    args = parser.parse_args()

    stack.compile_sources()
    data_dir = stack.data_folder()
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"
    with stack.dev_server(data_dir) as server:
        bare, bare_cpu = await bench_bare(server, args.tasks, args.concurrency, "BareWorkflow")
        bare_local, local_cpu = await bench_bare(server, args.tasks, args.concurrency, "BareLocalWorkflow")
        engine, engine_cpu = await bench_engine(server, args.tasks, args.concurrency, database_url, data_dir,
                                                args.workers, not args.no_sandbox, args.apis)
    mirror = "PostgreSQL" if "postgresql" in database_url else "SQLite"
    print(f"tasks={args.tasks} concurrency={args.concurrency} mirror={mirror} workers={args.workers} "
          f"apis={args.apis} sandbox={'off' if args.no_sandbox else 'on'}")
    print(f"bare Temporal, 2 activities                      {bare:7.1f} workflows/s")
    print(f"bare Temporal, 2 activities + 3 local activities {bare_local:7.1f} workflows/s")
    print(f"followthrough, HTTP API + SQL mirror             {engine:7.1f} tasks/s")
    print(f"ratio to the same number of activities           {engine / bare_local:7.2f}x")
    print(f"ratio to the two activities alone                {engine / bare:7.2f}x")
    print(f"\nCPU per task in ms ({os.cpu_count()} cores)   worker   api  temporal  client  total")
    for name, spent in [("bare, 2 activities", bare_cpu), ("bare, + 3 local activities", local_cpu),
                        ("followthrough", engine_cpu)]:
        per = {k: 1000 * v / args.tasks for k, v in spent.items()}
        per["worker"] = sum(v for k, v in per.items() if k.startswith("worker"))
        per["api"] = sum(v for k, v in per.items() if k.startswith("api"))
        print(f"  {name:28s} {per['worker']:8.1f} {per.get('api', 0):5.1f} {per['temporal']:9.1f} "
              f"{per['client']:7.1f} {per['worker'] + per.get('api', 0) + per['temporal'] + per['client']:6.1f}")


if __name__ == "__main__":
    asyncio.run(main())
