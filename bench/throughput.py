"""End-to-end throughput: followthrough tasks through the HTTP API versus bare
Temporal workflows with the same number of activities, on one dev server, in one run.

    python bench/throughput.py [--tasks 500] [--concurrency 50] [--database-url URL]

Each side gets a fresh worker process; the engine side also gets its API
process. A task counts as done when the mirror shows it completed; a bare
workflow when its result arrives. Prints tasks/s for both and their ratio.
"""

import argparse
import asyncio
import compileall
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from followthrough.binaries import find_binary  # noqa: E402
from followthrough.search_attributes import dev_server_arguments  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU spent by named processes between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids, self.spent = pids, {}

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.spent = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def payload(i: int) -> dict:
    return {"customer_name": f"Customer {i}", "customer_email": f"ap{i}@example.com",
            "invoice_number": f"INV-{i}", "invoice_amount": 100 + i, "currency": "USD",
            "due_date": "2026-01-01", "days_overdue": 5}


async def run_bounded(n: int, concurrency: int, job) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def runner() -> None:
        while not queue.empty():
            await job(queue.get_nowait())

    await asyncio.gather(*[runner() for _ in range(concurrency)])


async def bench_bare(address: str, n: int, concurrency: int, workflow_name: str,
                     server_pid: int) -> tuple[float, dict[str, float]]:
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py"), address, queue])
    meter = CpuMeter({"worker": worker.pid, "temporal": server_pid, "client": os.getpid()})
    try:
        client = await Client.connect(address)
        # Warm up the worker so both sides are measured hot.
        await client.execute_workflow(workflow_name, payload(0), id=f"{queue}-warm", task_queue=queue)
        meter.start()
        start = time.perf_counter()

        async def one(i: int) -> None:
            await client.execute_workflow(workflow_name, payload(i), id=f"{queue}-{i}", task_queue=queue)

        await run_bounded(n, concurrency, one)
        rate = n / (time.perf_counter() - start)
        meter.stop()
        return rate, meter.spent
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait()


async def bench_engine(address: str, n: int, concurrency: int, database_url: str, data_dir: Path,
                       server_pid: int, workers: int, sandbox: bool) -> tuple[float, dict[str, float]]:
    api_port = free_port()
    env = os.environ | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": address, "FOLLOWTHROUGH_DATABASE_URL": database_url,
        "FOLLOWTHROUGH_DATA_DIR": str(data_dir), "FOLLOWTHROUGH_API_PORT": str(api_port),
        "FOLLOWTHROUGH_TASK_QUEUE": f"bench-engine-{uuid.uuid4().hex[:8]}",
        "FOLLOWTHROUGH_WORKFLOW_SANDBOX": str(sandbox).lower(),
        # As `followthrough dev` runs: payloads encrypted with a key in the data folder, calls without keys.
        "FOLLOWTHROUGH_CODEC": "local-key", "FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true",
    }
    cli = [sys.executable, "-m", "followthrough.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, cwd=ROOT)
    procs = [subprocess.Popen([*cli, "api"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL)]
    procs += [subprocess.Popen([*cli, "worker"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
              for _ in range(workers)]
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    meter = CpuMeter({"api": procs[0].pid, "temporal": server_pid, "client": os.getpid()}
                     | {f"worker{i}": p.pid for i, p in enumerate(procs[1:])})
    try:
        wait_port(api_port)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}/api/v1", limits=limits,
                                     timeout=60) as http:

            async def create(i: int, tenant_id: str = tenant) -> None:
                response = await http.post("/tasks", json={
                    "type": "invoice_follow_up", "mode": "autonomous", "tenant_id": tenant_id,
                    "subject_ref_type": "INVOICE", "subject_ref_id": f"INV-{i}", "payload": payload(i)})
                response.raise_for_status()

            async def completed(tenant_id: str) -> int:
                response = await http.get("/tasks", params={"tenant_id": tenant_id, "status": "completed",
                                                            "limit": 1})
                return response.json()["total"]

            await create(0, "bench-warmup")
            while await completed("bench-warmup") < 1:
                await asyncio.sleep(0.25)
            meter.start()
            start = time.perf_counter()
            await run_bounded(n, concurrency, create)
            while (done := await completed(tenant)) < n:
                await asyncio.sleep(0.25)
            rate = done / (time.perf_counter() - start)
            meter.stop()
            return rate, meter.spent
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database-url", default="", help="mirror database (default: SQLite in a temp dir)")
    parser.add_argument("--workers", type=int, default=1, help="engine worker processes")
    parser.add_argument("--no-sandbox", action="store_true", help="run the engine's workflows unsandboxed")
    args = parser.parse_args()

    # Installed packages ship bytecode; a source checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile the workflow module in the
    # sandbox on every run, so compile once up front as an install would.
    compileall.compile_dir(str(ROOT), quiet=1, rx=re.compile(r"[/\\](\.venv|\.git|tests)[/\\]"))
    data_dir = Path(tempfile.mkdtemp(prefix="followthrough-bench-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"
    port = free_port()
    server = subprocess.Popen([
        find_binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless",
        "--db-filename", str(data_dir / "temporal.db"), "--log-level", "error",
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal", *dev_server_arguments()])
    try:
        wait_port(port)
        address = f"127.0.0.1:{port}"
        bare, bare_cpu = await bench_bare(address, args.tasks, args.concurrency, "BareWorkflow", server.pid)
        bare_local, local_cpu = await bench_bare(address, args.tasks, args.concurrency, "BareLocalWorkflow",
                                                 server.pid)
        engine, engine_cpu = await bench_engine(address, args.tasks, args.concurrency, database_url, data_dir,
                                                server.pid, args.workers, not args.no_sandbox)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    mirror = "PostgreSQL" if "postgresql" in database_url else "SQLite"
    print(f"tasks={args.tasks} concurrency={args.concurrency} mirror={mirror} workers={args.workers} "
          f"sandbox={'off' if args.no_sandbox else 'on'}")
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
        print(f"  {name:28s} {per['worker']:8.1f} {per.get('api', 0):5.1f} {per['temporal']:9.1f} "
              f"{per['client']:7.1f} {per['worker'] + per.get('api', 0) + per['temporal'] + per['client']:6.1f}")


if __name__ == "__main__":
    asyncio.run(main())
