"""``{{variables}}`` in a task definition's title, payload and defaults.

Every string inside a template tree (nested dicts and lists) is a Jinja2
template, rendered in the same sandbox as the task types' own templates. A
string that is exactly one expression (``"{{ amount }}"``) takes the value
itself, so numbers, lists and objects keep their JSON type; any other string
renders to text. A variable that is not given is an error naming it, never
silently empty text.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError, meta
from jinja2.runtime import Undefined

from followthrough.infra.template_sandbox import RenderLimitExceeded, environment, render_capped

Path = tuple[str | int, ...]

_WHOLE = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%|\{#).)*)\}\}$", re.S)


class TemplateProblem(ValueError):
    """A template that cannot be parsed or rendered, with where it is in the tree."""

    def __init__(self, path: Path, message: str, limit: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        # Over a bound of rendering (time, memory, output, loops), rather than wrong.
        self.limit = limit


@dataclass
class MissingVariables(ValueError):
    names: list[str]


def strings(tree: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """Every string in a JSON-like tree, with its path."""
    if isinstance(tree, str):
        return [(path, tree)]
    if isinstance(tree, dict):
        return [found for key, value in tree.items() for found in strings(value, (*path, key))]
    if isinstance(tree, list):
        return [found for index, value in enumerate(tree) for found in strings(value, (*path, index))]
    return []


def variables_of(tree: Any) -> set[str]:
    """The names of the variables a tree of templates uses; a syntax error is a TemplateProblem."""
    names: set[str] = set()
    env = environment()
    for path, source in strings(tree):
        if "{" not in source:
            continue
        try:
            names |= meta.find_undeclared_variables(env.parse(source))
        except TemplateSyntaxError as err:
            raise TemplateProblem(path, f"template syntax error: {err.message} (line {err.lineno})") from err
        except RecursionError:
            raise TemplateProblem(path, "template is nested too deeply to read") from None
    return names


def render_tree(tree: Any, variables: dict[str, Any], native: bool = True, max_output_chars: int | None = None) -> Any:
    """The tree with every string rendered, in this process; a missing variable is MissingVariables naming each.

    ``native``: a string that is exactly one expression takes its value's own type; else always text.
    Templates a person sent render through followthrough.infra.render_pool, which calls this in a bounded process.
    """
    missing = sorted(variables_of(tree) - set(variables))
    if missing:
        raise MissingVariables(missing)
    environment().begin(max_output_chars)
    return _render(tree, variables, (), native)


def _render(tree: Any, variables: dict[str, Any], path: Path, native: bool) -> Any:
    if isinstance(tree, dict):
        return {key: _render(value, variables, (*path, key), native) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_render(value, variables, (*path, index), native) for index, value in enumerate(tree)]
    if not isinstance(tree, str) or "{" not in tree:
        return tree
    env = environment()
    try:
        whole = _WHOLE.match(tree.strip()) if native else None
        if whole:
            value = env.compile_expression(whole.group("expr"), undefined_to_none=False)(**variables)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            env.check_size(value)
            return value if _json_value(value) else env.check_size(str(value))
        return render_capped(env, env.from_string(tree), variables)
    except RenderLimitExceeded as err:
        raise TemplateProblem(path, f"template is over a limit: {err.message}", limit=True) from None
    except MemoryError:
        raise TemplateProblem(path, "template is over a limit: it needs more memory than a render may use "
                                    "(template_render_memory_mb)", limit=True) from None
    except RecursionError:  # values nested thousands deep ({% set ns.v = [ns.v] %} in a loop)
        raise TemplateProblem(path, "template is over a limit: what it builds is nested too deeply to render",
                              limit=True) from None
    except UndefinedError as err:
        raise TemplateProblem(path, f"template refers to something the variables lack: {err.message}") from err
    except TemplateSyntaxError as err:
        raise TemplateProblem(path, f"template syntax error: {err.message}") from err
    except Exception as err:  # noqa: BLE001 - any failure inside a user's template (a bad filter, 1/0, ...)
        raise TemplateProblem(path, f"template failed to render: {type(err).__name__}: {err}") from err


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
