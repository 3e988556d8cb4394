"""Processes the scale benchmark starts: a Temporal dev server, the engine's API and
worker, a bare worker, and reading a process's memory from /proc."""

import os
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from throughput import ROOT, free_port, wait_port

from followthrough.binaries import find_binary
from followthrough.search_attributes import dev_server_arguments


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def temporal_server(data_dir: Path) -> Iterator[str]:
    """A fresh dev server (WAL SQLite, as `followthrough dev` runs it); yields its address."""
    port = free_port()
    server = subprocess.Popen([
        find_binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless",
        "--db-filename", str(data_dir / "temporal.db"), "--log-level", "error",
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal", *dev_server_arguments()])
    try:
        wait_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        _stop([server])


def engine_env(address: str, database_url: str, data_dir: Path, extra: dict[str, str] | None = None) -> dict:
    return os.environ | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": address, "FOLLOWTHROUGH_DATABASE_URL": database_url,
        "FOLLOWTHROUGH_DATA_DIR": str(data_dir), "FOLLOWTHROUGH_API_PORT": str(free_port()),
        "FOLLOWTHROUGH_TASK_QUEUE": f"bench-scale-{uuid.uuid4().hex[:8]}",
        # As `followthrough dev` runs: payloads encrypted with a key in the data folder, calls without keys.
        "FOLLOWTHROUGH_CODEC": "local-key", "FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true",
        "FOLLOWTHROUGH_LOG_LEVEL": "WARNING",
    } | (extra or {})


@contextmanager
def engine(env: dict, worker: bool = True, migrate: bool = True) -> Iterator[dict[str, int]]:
    """The API (and a worker) as separate processes; yields {"api": pid, "worker": pid, "port": port}."""
    cli = [sys.executable, "-m", "followthrough.cli"]
    if migrate:
        subprocess.run([*cli, "migrate"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    # Their logs go to files in the data folder: the API logs every request.
    logs = Path(env["FOLLOWTHROUGH_DATA_DIR"])
    procs = [subprocess.Popen([*cli, "api"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=(logs / "api.log").open("ab"))]
    if worker:
        procs.append(subprocess.Popen([*cli, "worker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=(logs / "worker.log").open("ab")))
    try:
        port = int(env["FOLLOWTHROUGH_API_PORT"])
        wait_port(port)
        yield {"api": procs[0].pid, "port": port} | ({"worker": procs[1].pid} if worker else {})
    finally:
        _stop(procs)


@contextmanager
def bare_worker(address: str, task_queue: str, env: dict | None = None) -> Iterator[int]:
    """bench/bare.py's worker process; yields its pid."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py"), address, task_queue],
                            env=env or os.environ)
    try:
        yield proc.pid
    finally:
        _stop([proc])
