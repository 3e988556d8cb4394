"""A PostgreSQL server of a test's own, to stop and start at will without touching the shared one.

`initdb` refuses to run as root; when the tests run as root, the server's commands run as the `postgres`
OS user (through `runuser`) on a data directory it owns. The test is skipped only when the PostgreSQL
binaries are not installed.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

BIN = Path(os.environ.get("FOLLOWTHROUGH_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"


def available() -> bool:
    return all((BIN / name).is_file() for name in ("initdb", "pg_ctl", "postgres", "psql"))


class PrivatePostgres:
    """One cluster in a temporary directory, listening on 127.0.0.1 on a free port (trust authentication)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}{result.stdout}\n{log}")
        return result

    def init(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            user = pwd.getpwnam(OS_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        # fsync=off is safe against a server process that is killed (the OS still holds what it wrote), which
        # is all the tests do; synchronous_commit stays on, or a commit acknowledged just before an immediate
        # stop would be lost.
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `immediate` is a crash (no checkpoint, clients cut off)."""
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self._run(BIN / "pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def create_database(self, name: str) -> None:
        self._run(BIN / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"')

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, stopped and removed afterwards whatever happened."""
    if not available():
        pytest.skip(f"PostgreSQL binaries not found in {BIN}")
    root = Path(tempfile.mkdtemp(prefix="ft-pg-"))
    server = PrivatePostgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.data.exists() and server.running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_server() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server
