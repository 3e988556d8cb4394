"""docker-compose.yml: a compose validator accepts it, and it wires the stack as intended.

The validator is Compose itself, without a Docker engine: `docker compose config`
(the Docker CLI plugin) or `docker-compose config` (Debian's docker-compose
package). One of them must be installed; this test installs nothing.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "temporal", "temporal-ui", "migrate", "temporal-setup", "api", "worker"}
APP_SERVICES = ("migrate", "temporal-setup", "api", "worker")
LONG_RUNNING = ("postgres", "temporal", "temporal-ui", "api", "worker")
ONE_SHOT = ("migrate", "temporal-setup")
# Variables the file reads from the environment, each with a default; set in a test to see them used.
OVERRIDES = {"FOLLOWTHROUGH_TASK_QUEUE": "orders-q", "FOLLOWTHROUGH_TEMPORAL_NAMESPACE": "orders",
             "FOLLOWTHROUGH_CODEC_KEY": "a2V5LWZyb20tdGhlLWVudmlyb25tZW50",
             "FOLLOWTHROUGH_LINK_KEY": "link-key-from-the-environment", "FOLLOWTHROUGH_PUBLIC_URL":
             "https://tasks.example.com", "API_PORT": "9000", "TEMPORAL_RETENTION": "30d",
             "TEMPORAL_PORT": "17233", "TEMPORAL_UI_PORT": "18233"}
REQUIRED_APP_ENV = ("FOLLOWTHROUGH_TEMPORAL_ADDRESS", "FOLLOWTHROUGH_DATABASE_URL", "FOLLOWTHROUGH_CODEC_KEYS",
                    "FOLLOWTHROUGH_APPROVAL_LINK_SECRET")


def _compose_command() -> list[str] | None:
    """The first compose validator on this machine, or None."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    docker_compose = shutil.which("docker-compose")
    if docker_compose:
        return [docker_compose]
    return None


def _run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.fail(
            "No compose validator found: neither `docker compose` (the Docker CLI plugin) nor "
            "`docker-compose` is installed. Install Debian's docker-compose package "
            "(`apt-get install -y docker-compose`) to validate docker-compose.yml.",
            pytrace=False,
        )
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        # Without the variables the file reads, so the defaults are what is rendered unless a test sets them.
        env={k: v for k, v in os.environ.items() if k not in OVERRIDES and k != "FOLLOWTHROUGH_DB_PASSWORD"}
        | (env or {}),
    )


def _rendered(env: dict[str, str] | None = None) -> dict:
    result = _run_compose("config", env=env)
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"
    return yaml.safe_load(result.stdout)["services"]


def _environment(service: dict) -> dict[str, str]:
    """A service's environment as a dict, whichever form (mapping or list) it is written in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_validator_accepts_the_file() -> None:
    result = _run_compose("config", "-q")
    assert result.returncode == 0, f"compose config -q failed:\n{result.stdout}\n{result.stderr}"


def test_rendered_config_has_every_service() -> None:
    result = _run_compose("config")
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"
    rendered = yaml.safe_load(result.stdout)
    assert SERVICES <= set(rendered["services"]), sorted(rendered["services"])


def test_declares_every_service(compose: dict) -> None:
    assert SERVICES <= set(compose["services"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_get_temporal_and_database_settings(compose: dict, name: str) -> None:
    env = _environment(compose["services"][name])
    for key in REQUIRED_APP_ENV:
        assert env.get(key), f"{name} has no {key}"
    assert env["FOLLOWTHROUGH_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["FOLLOWTHROUGH_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/followthrough" in env["FOLLOWTHROUGH_DATABASE_URL"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_waits_for_migration_and_temporal(compose: dict, name: str) -> None:
    depends_on = compose["services"][name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["temporal"]["condition"] == "service_healthy"
    assert depends_on["temporal-setup"]["condition"] == "service_completed_successfully"


def test_migrate_runs_once_after_postgres(compose: dict) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["followthrough", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no"


def test_search_attributes_are_registered_once_temporal_is_up(compose: dict) -> None:
    setup = compose["services"]["temporal-setup"]
    assert setup["command"] == ["followthrough", "temporal", "setup"]
    assert setup["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert _environment(setup)["FOLLOWTHROUGH_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert str(setup.get("restart", "no")) == "no"


def test_api_listens_on_all_interfaces_and_has_a_healthcheck(compose: dict) -> None:
    api = compose["services"]["api"]
    assert _environment(api)["FOLLOWTHROUGH_API_HOST"] == "0.0.0.0"
    assert "/api/v1/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_can_be_scaled(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_postgres_init_script_is_mounted(compose: dict) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    mounts = [v for v in volumes if isinstance(v, str) and "/docker-entrypoint-initdb.d/" in v]
    assert mounts, volumes
    source = mounts[0].split(":", 1)[0]
    assert (ROOT / source).is_file(), source


# ---- the rendered configuration (`docker-compose config`) ----------------------

@pytest.fixture(scope="module")
def rendered() -> dict:
    return _rendered()


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(rendered: dict, name: str) -> None:
    check = rendered[name].get("healthcheck")
    assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    assert str(rendered[name]["restart"]) == "unless-stopped"


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_steps_run_once(rendered: dict, name: str) -> None:
    assert str(rendered[name].get("restart", "no")) == "no"
    assert "healthcheck" not in rendered[name]


def test_temporal_runs_on_postgres_with_its_schema_set_up(rendered: dict) -> None:
    temporal = rendered["temporal"]
    assert "auto-setup" in temporal["image"]  # creates or upgrades the schema, then the namespace
    env = _environment(temporal)
    assert env["DB"].startswith("postgres") and env["POSTGRES_SEEDS"] == "postgres"
    assert env["DBNAME"] == "temporal" and env["VISIBILITY_DBNAME"] == "temporal_visibility"
    assert temporal["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "namespace describe" in " ".join(temporal["healthcheck"]["test"])


def test_ui_decodes_payloads_through_the_api(rendered: dict) -> None:
    ui = rendered["temporal-ui"]
    env = _environment(ui)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8000/codec"
    assert ui["depends_on"]["temporal"]["condition"] == "service_healthy"


def _published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of every port a rendered service publishes, whichever form compose wrote."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") not in (None, ""):
                found.append((str(port.get("host_ip") or "0.0.0.0"), str(port["published"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            found.append((parts[0], parts[1]))
        elif len(parts) == 2:
            found.append(("0.0.0.0", parts[0]))
    return found


@pytest.mark.parametrize("env", [None, OVERRIDES], ids=["defaults", "overrides"])
def test_temporal_and_its_ui_are_reachable_from_this_host_only(env: dict[str, str] | None) -> None:
    """Whoever reaches Temporal can decide tasks and read what it holds: the frontend and the Web UI (which
    has no login) listen on the host's loopback only; the API is the one public door."""
    services = _rendered(env)
    for name in ("temporal", "temporal-ui"):
        published = _published(services[name])
        assert published, f"{name} publishes no port for the host's own tools"
        assert {host for host, _port in published} == {"127.0.0.1"}, (name, published)
    if env:
        assert _published(services["temporal"]) == [("127.0.0.1", "17233")]
        assert _published(services["temporal-ui"]) == [("127.0.0.1", "18233")]
    for name, service in services.items():
        if name != "api":
            assert {host for host, _port in _published(service)} <= {"127.0.0.1"}, (name, service.get("ports"))


def test_search_attributes_are_registered_before_the_app_starts(rendered: dict) -> None:
    setup = rendered["temporal-setup"]
    assert setup["command"] == ["followthrough", "temporal", "setup"]
    assert setup["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends_on = rendered[name]["depends_on"]
        assert depends_on["temporal-setup"]["condition"] == "service_completed_successfully", name
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name


def test_the_api_starts_on_a_migrated_database(rendered: dict) -> None:
    assert rendered["migrate"]["command"] == ["followthrough", "migrate"]
    assert rendered["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert rendered["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_worker_health_is_its_own_poller_on_the_task_queue(rendered: dict) -> None:
    # The probe itself runs against a real worker in tests/deploy/test_packaging.py; the image has no `temporal` CLI.
    assert rendered["worker"]["healthcheck"]["test"] == ["CMD", "followthrough", "worker-health"]


def test_app_images_are_built_from_the_dockerfile(rendered: dict) -> None:
    assert (ROOT / "Dockerfile").is_file()
    for name in APP_SERVICES:
        assert rendered[name]["build"]["context"] == str(ROOT), name
        assert rendered[name]["image"] == "followthrough:latest", name


def test_every_variable_has_a_default() -> None:
    """The file renders with nothing set; each ${VAR} the file reads is ${VAR:-default}."""
    text = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    bare = [m.group(0) for m in re.finditer(r"(?<!\$)\$\{([A-Z0-9_]+)(?![:A-Z0-9_])", text)]
    assert bare == [], bare


def test_defaults_when_nothing_is_set(rendered: dict) -> None:
    env = _environment(rendered["worker"])
    assert env["FOLLOWTHROUGH_TASK_QUEUE"] == "followthrough"
    assert env["FOLLOWTHROUGH_TEMPORAL_NAMESPACE"] == "default"
    assert env["FOLLOWTHROUGH_SECRET_CODEC_1"] == ""  # the app refuses to start without a key
    assert env["FOLLOWTHROUGH_SECRET_LINK_1"] == ""  # likewise without the approval-link key it names
    assert [p["published"] for p in rendered["api"]["ports"]] in ([8000], ["8000"])


def test_settings_come_from_the_environment() -> None:
    services = _rendered(OVERRIDES)
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env["FOLLOWTHROUGH_TASK_QUEUE"] == "orders-q", name
        assert env["FOLLOWTHROUGH_TEMPORAL_NAMESPACE"] == "orders", name
        assert env["FOLLOWTHROUGH_SECRET_CODEC_1"] == OVERRIDES["FOLLOWTHROUGH_CODEC_KEY"], name
        # One approval-link key for every process: a link one signs, any other verifies.
        assert env["FOLLOWTHROUGH_APPROVAL_LINK_SECRET"] == "link_1", name
        assert env["FOLLOWTHROUGH_SECRET_LINK_1"] == OVERRIDES["FOLLOWTHROUGH_LINK_KEY"], name
        assert env["FOLLOWTHROUGH_PUBLIC_URL"] == "https://tasks.example.com", name
    temporal = _environment(services["temporal"])
    assert temporal["DEFAULT_NAMESPACE"] == "orders" and temporal["DEFAULT_NAMESPACE_RETENTION"] == "30d"
    assert _environment(services["temporal-ui"])["TEMPORAL_CODEC_ENDPOINT"] == "https://tasks.example.com/codec"
    assert [p["published"] for p in services["api"]["ports"]] in ([9000], ["9000"])
