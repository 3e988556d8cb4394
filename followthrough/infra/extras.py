"""The optional parts of an installation: each is a pip extra (pyproject.toml) and the modules it brings.

Whether a part is installed is decided from what is importable (``importlib.util.find_spec``), without
importing it, so the API (which never drives a browser) and the worker agree on which task types this
installation serves, and neither fails at import for a part it lacks.
"""

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    extra: str
    modules: tuple[str, ...]
    what: str  # what it brings, for the message


PARTS: dict[str, Part] = {
    "browser": Part("browser", ("playwright",), "Playwright, which drives Chromium"),
}


def installed(name: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in PARTS[name].modules)


def missing(name: str) -> str | None:
    """Why the part is not usable here (which extra to install), or None when it is installed."""
    if installed(name):
        return None
    part = PARTS[name]
    return (f"the `{part.extra}` extra ({part.what}) is not installed: pip install 'followthrough[{part.extra}]' "
            f"(docs/operations.md, \"Production\")")
