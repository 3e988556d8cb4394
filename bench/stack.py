"""What every benchmark starts: a Temporal dev server of its own, the bare-baseline worker, and the
engine (API and worker processes, as `followthrough dev` runs them), plus CPU accounting and the small
helpers they share. Each starter is a context manager that stops what it started."""

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from followthrough.infra.binaries import find_binary  # noqa: E402
from followthrough.domain.search_attributes import dev_server_arguments  # noqa: E402


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


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def run_bounded(n: int, concurrency: int, job) -> None:
    """``job(i)`` for i in 0..n-1, ``concurrency`` at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def runner() -> None:
        while not queue.empty():
            await job(queue.get_nowait())

    await asyncio.gather(*[runner() for _ in range(concurrency)])


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
    """An invoice_follow_up payload (the bare workflows take the same)."""
    return {"customer_name": f"Customer {i}", "customer_email": f"ap{i}@example.com",
            "invoice_number": f"INV-{i}", "invoice_amount": 100 + i, "currency": "USD",
            "due_date": "2026-01-01", "days_overdue": 5}


def task_body(i: int, tenant: str, mode: str = "autonomous") -> dict:
    return {"type": "invoice_follow_up", "mode": mode, "tenant_id": tenant, "subject_ref_type": "INVOICE",
            "subject_ref_id": f"INV-{i}", "payload": payload(i)}


def compile_sources() -> None:
    """Installed packages ship bytecode; a source checkout run with PYTHONDONTWRITEBYTECODE would
    recompile the workflow module in the sandbox on every run, so compile once up front as an install would."""
    compileall.compile_dir(str(ROOT), quiet=1, rx=re.compile(r"[/\\](\.venv|\.git|tests)[/\\]"))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def data_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="followthrough-bench-"))


@dataclass
class Server:
    address: str
    pid: int


@contextmanager
def dev_server(data_dir: Path) -> Iterator[Server]:
    """The bundled Temporal dev server, as `followthrough dev` starts it (WAL SQLite, search attributes)."""
    port = free_port()
    server = subprocess.Popen([
        find_binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless",
        "--db-filename", str(data_dir / "temporal.db"), "--log-level", "error",
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal", *dev_server_arguments()])
    try:
        wait_port(port)
        yield Server(f"127.0.0.1:{port}", server.pid)
    finally:
        stop(server)


@dataclass
class BareWorker:
    task_queue: str
    pid: int


@contextmanager
def bare_worker(address: str, env: dict[str, str] | None = None) -> Iterator[BareWorker]:
    """A worker process for bench/bare.py's workflows on a fresh task queue."""
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py"), address, queue],
                              env=env or os.environ)
    try:
        yield BareWorker(queue, worker.pid)
    finally:
        stop(worker)


@dataclass
class Engine:
    api_urls: list[str]  # .../api/v1 of each API process
    api_pids: list[int]
    worker_pids: list[int]
    env: dict[str, str]

    @property
    def api_url(self) -> str:  # the first API process's: benches that use one
        return self.api_urls[0]

    @property
    def api_pid(self) -> int:
        return self.api_pids[0]


@contextmanager
def engine(address: str, database_url: str, data_dir: Path, workers: int = 1, sandbox: bool = True,
           migrate: bool = True, apis: int = 1, **settings: str) -> Iterator[Engine]:
    """The API and worker processes on a fresh task queue, the database migrated (unless ``migrate`` is off:
    a benchmark that set the schema itself), settings as `followthrough dev` uses them (payloads encrypted
    with a key in the data folder, calls without keys) plus ``settings`` (FOLLOWTHROUGH_* names). ``apis``
    API processes share the database and the task queue, each on a port of its own."""
    api_ports = [free_port() for _ in range(apis)]
    api_port = api_ports[0]
    env = os.environ | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": address, "FOLLOWTHROUGH_DATABASE_URL": database_url,
        "FOLLOWTHROUGH_DATA_DIR": str(data_dir), "FOLLOWTHROUGH_API_PORT": str(api_port),
        "FOLLOWTHROUGH_TASK_QUEUE": f"bench-engine-{uuid.uuid4().hex[:8]}",
        "FOLLOWTHROUGH_WORKFLOW_SANDBOX": str(sandbox).lower(),
        "FOLLOWTHROUGH_CODEC": "local-key", "FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true",
    } | settings
    cli = [sys.executable, "-m", "followthrough.cli"]
    if migrate:
        subprocess.run([*cli, "migrate"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    api_procs = [subprocess.Popen([*cli, "api"], env=env | {"FOLLOWTHROUGH_API_PORT": str(port)}, cwd=ROOT,
                                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for port in api_ports]
    worker_procs = [subprocess.Popen([*cli, "worker"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
                    for _ in range(workers)]
    procs = api_procs + worker_procs
    try:
        for port in api_ports:
            wait_port(port)
        urls = [f"http://127.0.0.1:{port}/api/v1" for port in api_ports]
        yield Engine(urls, [p.pid for p in api_procs], [p.pid for p in worker_procs], env)
    finally:
        for proc in reversed(procs):
            stop(proc)


async def count(http: httpx.AsyncClient, tenant: str, status: str | None = None) -> int:
    """Tasks of a tenant in the mirror, as the API lists them. A pooled connection the server has just closed
    while idle fails the request before it reaches the server (httpx reports RemoteProtocolError or ReadError):
    the count, which changes nothing, is asked again on a fresh connection."""
    params = {"tenant_id": tenant, "limit": 1} | ({"status": status} if status else {})
    for attempt in range(3):
        try:
            response = await http.get("/tasks", params=params)
            break
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if attempt == 2:
                raise
    response.raise_for_status()
    return response.json()["total"]


async def warm_up(http: httpx.AsyncClient) -> None:
    """One task through the engine so the measured ones find every process hot."""
    tenant = f"bench-warmup-{uuid.uuid4().hex[:8]}"  # its own, so a database used before holds no duplicate
    (await http.post("/tasks", json=task_body(0, tenant))).raise_for_status()
    while await count(http, tenant, "completed") < 1:
        await asyncio.sleep(0.25)
