"""Sandboxed Jinja2 rendering of task templates.

The sandbox keeps a template (which may one day come from a user) from
reaching Python internals; StrictUndefined turns a missing variable into an
error instead of silently empty text.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                                autoescape=False, keep_trailing_newline=False)


def render(template_name: str, variables: dict[str, Any]) -> str:
    return environment().get_template(template_name).render(**variables).strip()


def render_string(source: str, variables: dict[str, Any]) -> str:
    return environment().from_string(source).render(**variables).strip()
