"""docker-compose.yml: a compose validator accepts it, and it wires the stack as intended.

The validator is Compose itself, without a Docker engine: `docker compose config`
(the Docker CLI plugin) or `docker-compose config` (Debian's docker-compose
package). One of them must be installed; this test installs nothing.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "temporal", "temporal-ui", "migrate", "temporal-setup", "api", "worker"}
APP_SERVICES = ("migrate", "api", "worker")
REQUIRED_APP_ENV = ("FOLLOWTHROUGH_TEMPORAL_ADDRESS", "FOLLOWTHROUGH_DATABASE_URL", "FOLLOWTHROUGH_CODEC_KEYS")


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


def _run_compose(*args: str) -> subprocess.CompletedProcess[str]:
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
    )


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
