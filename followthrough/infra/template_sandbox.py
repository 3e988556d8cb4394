"""The Jinja2 sandbox every template renders in, with its costs bounded.

The sandbox keeps a template (which may come from a user) from reaching
Python internals; StrictUndefined turns a missing variable into an error
instead of silently empty text.

A sandboxed template can still ask for a lot of work: nested loops, ``'x' *
10**9``, ``2 ** 100000000``, a filter a billion wide. ``BoundedSandbox``
refuses the obvious ones cheaply (every operator, call and filter is checked,
and none is evaluated when a template is only parsed or inspected), but the
bound that holds is the process it renders in: templates a person sends render
in followthrough/infra/render_pool.py, under a deadline and a memory limit. This
module imports nothing of followthrough, so that process starts quickly.
"""

import functools
import math
import re
from collections.abc import Callable, Sized
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateRuntimeError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, _PassArg, pass_context

# The shipped templates (followthrough/tasktypes/templates/), which a template may include.
TEMPLATES = Path(__file__).parent.parent / "tasktypes" / "templates"

# What one render may produce and loop over unless told otherwise (followthrough/config/settings.py sets the
# pool's); a single operation asking for more than the output may hold is refused before it runs.
MAX_OUTPUT_CHARS = 1_000_000
RANGE_BUDGET = 100_000
# 2 ** 65536 already prints as 19,729 digits (more than Python will print); nothing legitimate needs more.
MAX_INT_BITS = 65_536


class RenderLimitExceeded(TemplateRuntimeError):
    """A template asked for more output, iterations or memory than a render may have."""


class BoundedSandbox(SandboxedEnvironment):
    """The sandbox, with the costs of operators, calls, filters and ``range`` checked as they run."""

    # Every operator goes through call_binop. Besides the checks, this keeps Jinja's optimizer from
    # evaluating a constant expression ('x' * 10**9) when a template is merely compiled or inspected.
    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_output_chars = MAX_OUTPUT_CHARS
        self.range_budget = RANGE_BUDGET
        self._range_left = RANGE_BUDGET
        self.globals["range"] = self._range
        self.globals["namespace"] = functools.partial(_BoundedNamespace, self)
        # The optimizer evaluates a filter with constant arguments at compile time (even when only
        # inspecting a template's variables); a filter that takes the context is never evaluated there.
        self.filters = {name: _at_run_time(self, f) for name, f in self.filters.items()}

    def begin(self, max_output_chars: int | None = None, range_budget: int | None = None) -> None:
        """Start one render's accounting: every ``range`` of the render draws on one budget."""
        self.max_output_chars = max_output_chars or MAX_OUTPUT_CHARS
        self.range_budget = range_budget or RANGE_BUDGET
        self._range_left = self.range_budget

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        self._range_left -= len(numbers)
        if self._range_left < 0:
            raise RenderLimitExceeded(f"the template's loops exceed the limit of {self.range_budget} range "
                                      "items in one render; loop over less")
        return numbers

    def check_size(self, value: Any, what: str = "a value") -> Any:
        if isinstance(value, Sized) and not isinstance(value, (dict, set, frozenset)) \
                and len(value) > self.max_output_chars:
            raise RenderLimitExceeded(f"{what} of {len(value)} items exceeds the output limit of "
                                      f"{self.max_output_chars} characters")
        return value

    def check_int(self, value: Any) -> None:
        if type(value) is int and abs(value) > self.max_output_chars:
            raise RenderLimitExceeded(f"the number {value} is past the limit of {self.max_output_chars} for a "
                                      "width, count or repetition")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > self.max_output_chars:
                    raise RenderLimitExceeded(f"repeating {len(seq)} items {times} times exceeds the output "
                                              f"limit of {self.max_output_chars} characters")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * math.log2(abs(left)) > MAX_INT_BITS:
                raise RenderLimitExceeded(f"{left} ** {right} exceeds the limit of {MAX_INT_BITS} bits for a number")
        elif operator == "%" and isinstance(left, str):
            _check_widths(self, left)
        result = super().call_binop(context, operator, left, right)
        return self.check_size(result, f"the result of {operator!r}")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # The sandbox hands out str.format wrapped (its own safe formatter); the string is the wrapped method's.
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        name = getattr(__obj, "__name__", None)
        if name in ("format", "format_map") and isinstance(owner, str):
            _check_widths(__self, owner, braces=True)
        elif isinstance(owner, (str, list)) or name == "generate_lorem_ipsum":
            # A sequence's methods take widths and counts ('x'.ljust(10**9)); so does lipsum(n).
            for value in (*args, *kwargs.values()):
                __self.check_int(value)
        return __self.check_size(super().call(__context, __obj, *args, **kwargs), "a call's result")


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")


def _check_widths(env: BoundedSandbox, spec: str, braces: bool = False) -> None:
    """Refuse a format string asking for a field wider than the output may be ('%0999999999d', '{:>999999999}')."""
    if braces:
        try:
            numbers = re.findall(r"\d+", " ".join(f for _, _, f, _ in Formatter().parse(spec) if f))
        except ValueError:  # not a format string: the call itself says so
            return
    else:
        numbers = [n for m in _PERCENT.finditer(spec) for n in m.groups() if n]
    for number in numbers:
        if int(number) > env.max_output_chars:
            raise RenderLimitExceeded(f"a format width of {number} exceeds the output limit of "
                                      f"{env.max_output_chars} characters")


class _BoundedNamespace(Namespace):
    """``namespace()``, whose values are held to the output limit: ``{% set ns.s = ns.s ~ ns.s %}`` in a
    loop doubles a string each time, and ``~`` itself cannot be intercepted."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Namespace's own signature
        self, env, *rest = args
        object.__setattr__(self, "_env", env)
        Namespace.__init__(self, *rest, **kwargs)

    def __setitem__(self, name: str, value: Any) -> None:
        object.__getattribute__(self, "_env").check_size(value, f"namespace value {name!r}")
        super().__setitem__(name, value)


def _at_run_time(env: BoundedSandbox, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, taking the context (so never evaluated at compile time), with its arguments and
    result checked like a call's."""
    kind = _PassArg.from_obj(func)

    @pass_context
    @functools.wraps(func, assigned=("__name__", "__doc__"), updated=())
    def bounded(context: Context, *args: Any, **kwargs: Any) -> Any:
        if func.__name__ == "do_format":  # its arguments are values; its widths are in the format
            if args and isinstance(args[0], str):
                _check_widths(env, args[0])
        elif func.__name__ != "do_sum":  # else they are widths and counts (center, indent, batch, ...)
            for value in (*args[1:], *kwargs.values()):
                env.check_int(value)
        first = {_PassArg.context: context, _PassArg.eval_context: context.eval_ctx,
                 _PassArg.environment: context.environment}.get(kind)  # type: ignore[call-overload]
        result = func(first, *args, **kwargs) if first is not None else func(*args, **kwargs)
        return env.check_size(result, f"the result of filter {func.__name__!r}")

    return bounded


def render_capped(env: BoundedSandbox, template: Template, variables: dict[str, Any]) -> str:
    """The template's text, stopped as soon as it grows past the output limit."""
    parts: list[str] = []
    size = 0
    for part in template.generate(**variables):
        size += len(part)
        if size > env.max_output_chars:
            raise RenderLimitExceeded(f"the rendered text exceeds the output limit of {env.max_output_chars} "
                                      "characters")
        parts.append(part)
    return "".join(parts)


@lru_cache
def environment() -> BoundedSandbox:
    return BoundedSandbox(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                          autoescape=False, keep_trailing_newline=False)
