"""Connectors: declarative HTTP APIs whose actions are task types ``<connector>.<action>``.

A connector is a YAML file (format: spec.py; docs/task-types.md, "Connectors"; the shipped example is
crm.yaml beside this file). The API and the worker call ``install(settings)`` at start: it registers the
actions of the shipped connectors and of those in FOLLOWTHROUGH_CONNECTORS_DIR, with the base URLs of
FOLLOWTHROUGH_CONNECTOR_BASE_URLS, in the task type registry. A file that does not validate stops the start
with an error naming the file and the part of it at fault.
"""

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from followthrough.config.settings import Settings
from followthrough.connectors.actions import task_type
from followthrough.connectors.spec import ConnectorSpec
from followthrough.infra.outbound import OutboundPolicy
from followthrough.tasktypes import REGISTRY
from followthrough.tasktypes.base import TaskType

log = logging.getLogger("followthrough.connectors")

SHIPPED = Path(__file__).parent
SUFFIXES = (".yaml", ".yml")
# The task types install() registered last, so another install replaces them.
_installed: set[str] = set()


class ConnectorError(ValueError):
    """A connector file that cannot be loaded, or connectors that do not fit together."""


def load_file(path: Path) -> ConnectorSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConnectorError(f"{path}: cannot read it: {err}") from err
    except yaml.YAMLError as err:
        raise ConnectorError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConnectorError(f"{path}: a connector file holds a mapping (name, base_url, auth, actions)")
    try:
        return ConnectorSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors(include_url=False))
        raise ConnectorError(f"{path}: {problems}") from err


def _problem(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_dir(folder: Path) -> list[ConnectorSpec]:
    if not folder.is_dir():
        raise ConnectorError(f"{folder}: the connectors folder does not exist")
    return [load_file(path) for path in sorted(folder.iterdir()) if path.suffix in SUFFIXES and path.is_file()]


def load(connectors_dir: Path | None = None, base_urls: dict[str, str] | None = None) -> list[ConnectorSpec]:
    """The shipped connectors, then those in ``connectors_dir``, with base URLs overridden by ``base_urls``."""
    specs = load_dir(SHIPPED) + (load_dir(connectors_dir) if connectors_dir is not None else [])
    by_name: dict[str, ConnectorSpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise ConnectorError(f"two connector files are named {spec.name!r}")
        by_name[spec.name] = spec
    for name, url in (base_urls or {}).items():
        if name not in by_name:
            raise ConnectorError(f"FOLLOWTHROUGH_CONNECTOR_BASE_URLS names {name!r}, which is no connector; "
                                 f"loaded: {', '.join(sorted(by_name))}")
        try:
            by_name[name] = ConnectorSpec.model_validate(by_name[name].model_dump() | {"base_url": url})
        except ValidationError as err:
            raise ConnectorError(f"FOLLOWTHROUGH_CONNECTOR_BASE_URLS[{name!r}]: "
                                 f"{'; '.join(_problem(e) for e in err.errors(include_url=False))}") from err
    return list(by_name.values())


def task_types(specs: list[ConnectorSpec]) -> dict[str, TaskType]:
    return {f"{spec.name}.{name}": task_type(spec, name, action)
            for spec in specs for name, action in spec.actions.items()}


def install(settings: Settings) -> list[ConnectorSpec]:
    """Register every connector's actions as task types (replacing those of an earlier install)."""
    specs = load(settings.connectors_dir, settings.connector_base_urls)
    types = task_types(specs)
    clashes = sorted(name for name in types if name in REGISTRY and name not in _installed)
    if clashes:
        raise ConnectorError(f"connector actions clash with built-in task types: {', '.join(clashes)}")
    for name in _installed - set(types):
        REGISTRY.pop(name, None)
    REGISTRY.update(types)
    _installed.clear()
    _installed.update(types)
    policy = OutboundPolicy.from_entries(settings.outbound_allow)
    for spec in specs:
        log.info("connector %s at %s: %s", spec.name, spec.base_url,
                 ", ".join(f"{spec.name}.{action}" for action in spec.actions))
        if (refusal := policy.refusal_for_url(spec.base_url)) is not None:
            log.warning("connector %s: its base URL will be refused: %s", spec.name, refusal)
    return specs


def describe(specs: list[ConnectorSpec]) -> str:
    """A listing for people: each connector, its actions and their variables."""
    types = task_types(specs)
    lines: list[str] = []
    for spec in specs:
        auth = f"{spec.auth.type} from the secret {spec.auth.secret!r}" if spec.auth.secret else "no auth"
        lines.append(f"{spec.name}  {spec.base_url}  ({auth})")
        for name, action in spec.actions.items():
            schema = types[f"{spec.name}.{name}"].payload_schema()
            required = set(schema.get("required", []))
            variables = ", ".join(v + ("" if v in required else "?") for v in schema.get("properties", {}))
            lines.append(f"  {spec.name}.{name}  {action.method} {action.path}  [{variables}]")
    return "\n".join(lines)
