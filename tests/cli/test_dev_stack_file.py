"""<data_dir>/dev.json as an attacker sees it: a file in a working folder that commands read. It gives a command
the choices of a live `followthrough dev` of this user on loopback, below the environment, and nothing else:
never to `api` or `worker`, never for a command pointed at another Temporal or database, never anonymous
access, keys or secrets. (tests/cli/test_cli_beside_dev.py runs the commands against a real dev stack.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import typer.main

from followthrough.cli import api_client
from followthrough.config import dev_stack_file
from followthrough.cli import BESIDE_DEV, app
from followthrough.config.settings import Settings, beside_dev_stack

STACK = {"temporal_address": "127.0.0.1:17233", "temporal_namespace": "default", "task_queue": "followthrough",
         "temporal_ui_url": "http://127.0.0.1:18233", "temporal_envconfig": False, "api_host": "127.0.0.1",
         "api_port": 18000, "codec": "local-key"}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder, entered, with no setting in the environment (as a second terminal has)."""
    for name in list(os.environ):
        if name.startswith(("FOLLOWTHROUGH_", "TEMPORAL_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def data() -> Path:
    return Path(".followthrough")


def write(values: dict | None = None) -> Path:
    data().mkdir(exist_ok=True)
    return dev_stack_file.write(data(), STACK if values is None else values)


def rewrite(path: Path, **changes: object) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_stack_gives_its_choices_as_defaults(folder: Path):
    assert Settings().codec == "on"  # what a command has without the file
    write()
    settings = beside_dev_stack(Settings())
    assert (settings.temporal_address, settings.api_port, settings.codec) == ("127.0.0.1:17233", 18000, "local-key")
    assert settings.temporal_ui_url == "http://127.0.0.1:18233" and settings.anonymous_access is False
    assert settings.temporal_envconfig is False  # as dev's own children: no Temporal profile's TLS or API key
    assert api_client.api_url(settings=settings) == "http://127.0.0.1:18000"
    assert (folder / ".followthrough" / "dev.json").stat().st_mode & 0o777 == 0o600


def test_the_environment_wins_setting_by_setting(folder: Path, monkeypatch: pytest.MonkeyPatch):
    write()
    monkeypatch.setenv("FOLLOWTHROUGH_API_PORT", "19000")
    monkeypatch.setenv("FOLLOWTHROUGH_CODEC", "on")
    monkeypatch.setenv("FOLLOWTHROUGH_TEMPORAL_ADDRESS", "127.0.0.1:17233")  # the same stack, said explicitly
    settings = beside_dev_stack(Settings())
    assert (settings.temporal_address, settings.api_port, settings.codec) == ("127.0.0.1:17233", 19000, "on")
    assert settings.temporal_ui_url == "http://127.0.0.1:18233"


@pytest.mark.parametrize("variable, value", [
    ("FOLLOWTHROUGH_TEMPORAL_ADDRESS", "temporal.prod.internal:7233"),
    ("TEMPORAL_ADDRESS", "temporal.prod.internal:7233"),
    ("FOLLOWTHROUGH_DATABASE_URL", "postgresql+asyncpg://app@db.prod.internal/followthrough"),
    ("TEMPORAL_CONFIG_FILE", "/etc/temporal/prod.toml"),
    ("FOLLOWTHROUGH_TEMPORAL_PROFILE", "prod"),
])
def test_a_command_pointed_elsewhere_takes_nothing_from_the_file(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 variable: str, value: str):
    write()
    monkeypatch.setenv(variable, value)
    settings = beside_dev_stack(Settings())
    assert (settings.codec, settings.api_port, settings.temporal_ui_url) == ("on", 8000, "http://localhost:8233")
    assert settings.temporal_envconfig is True


@pytest.mark.parametrize("case", ["dead pid", "remote temporal", "group-writable", "symlink", "other folder",
                                  "unknown codec", "not json", "pid not a number", "other owner"])
def test_only_a_live_stack_of_this_user_on_loopback_counts(folder: Path, tmp_path_factory: pytest.TempPathFactory,
                                                           case: str):
    path = write()
    if case == "dead pid":
        rewrite(path, pid=dead_pid())
    elif case == "remote temporal":
        rewrite(path, temporal_address="temporal.example.com:7233")
    elif case == "group-writable":
        path.chmod(0o620)
    elif case == "symlink":
        real = path.with_name("real.json")
        path.rename(real)
        path.symlink_to(real)
    elif case == "other folder":  # a data folder copied from elsewhere, with its stack's pid still alive
        rewrite(path, data_dir=str(tmp_path_factory.mktemp("elsewhere")))
    elif case == "unknown codec":
        rewrite(path, codec="plaintext-please")
    elif case == "not json":
        path.write_text("{not json")
    elif case == "pid not a number":
        rewrite(path, pid="1")
    elif case == "other owner":
        if os.getuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(path, 65534, 65534)
    assert dev_stack_file.live(data()) is None
    assert beside_dev_stack(Settings()).codec == "on"


def test_the_file_never_gives_anonymous_access_keys_or_secrets(folder: Path):
    path = write()
    rewrite(path, anonymous_access=True, codec_keys=["planted"], secrets_file="/tmp/planted.json",
            outbound_allow=["0.0.0.0/0"], public_url="http://attacker.example")
    settings = beside_dev_stack(Settings())
    assert settings.codec == "local-key"  # the file counts ...
    assert settings.anonymous_access is False and settings.codec_keys == []  # ... for its own fields only
    assert settings.secrets_file is None and settings.outbound_allow == [] and settings.public_url == ""


def test_a_non_loopback_api_host_is_not_taken(folder: Path):
    write(STACK | {"api_host": "203.0.113.9"})
    settings = beside_dev_stack(Settings())
    assert (settings.api_host, settings.api_port, settings.codec) == ("127.0.0.1", 8000, "local-key")


def test_remove_leaves_another_stacks_file(folder: Path):
    path = write()
    rewrite(path, pid=os.getppid())  # another live process's stack
    dev_stack_file.remove(data())
    assert path.exists()
    rewrite(path, pid=os.getpid())
    dev_stack_file.remove(data())
    assert not path.exists()


def start(folder: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")}
    return subprocess.Popen([sys.executable, "-m", "followthrough.cli", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def refusal(proc: subprocess.Popen) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_api_and_worker_never_read_it(folder: Path):
    # The file describes a live stack (this test process) with the codec on a local key; an `api` or
    # `worker` an operator starts in the folder must still insist on its own settings. And `temporal setup
    # --address` another Temporal: the file is not that Temporal's. (Started together: each takes seconds.)
    write()
    started = [start(folder, "api"), start(folder, "worker"), start(folder, "temporal", "setup", "--address",
                                                                      "127.0.0.1:1")]
    for proc in started:
        code, err = refusal(proc)
        assert code == 2 and "names no key" in err, (proc.args, err)


def test_a_second_dev_in_the_same_folder_is_refused(folder: Path):
    path = write()
    code, err = refusal(start(folder, "dev"))
    assert code == 2 and f"already running with the data in {folder / '.followthrough'}" in err, err
    assert f"pid {os.getpid()}" in err
    assert path.exists()  # the running stack's file stays


def test_every_command_is_placed_on_one_side():
    commands = set(typer.main.get_command(app).commands)  # the hidden spellings too
    assert BESIDE_DEV <= commands
    assert commands - BESIDE_DEV == {"dev", "api", "worker", "worker-health"}
