"""Query strings: a route takes the query parameters it declares and no others.

An app-wide dependency (it runs before the route's own parameters are read) compares the request's query keys
with the route's declared query parameters. A key the route does not take is a 422 naming it and listing the
ones it does take: an ignored filter would answer with the wrong rows. Before that, the seeds' spellings are
put into ours (followthrough/domain/seed_vocabulary.py): camelCase of a declared parameter (``ownerId``),
the seeds' names for one (``before`` for ``due_before``, ``agent_id`` for ``owner_id``, ``tags`` for
``tag``), status values in any case (``PENDING``), type names as the seeds spell them
(``INVOICE_FOLLOW_UP``, ``api_call``) and ``page`` (1-based, of ``limit`` rows) for ``offset``.

A route that reads its query string itself (the inbox pages) names what it reads with ``takes_query``;
one that answers every call the same way whatever it carries (the directions for the seeds' own paths,
the codec endpoints, to which the Temporal Web UI adds options of its own such as ``preserveStorageRefs``)
is marked ``any_query``.
"""

import types
from collections.abc import Callable
from typing import Any, TypeVar, Union, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_snake
from starlette.datastructures import QueryParams

from followthrough.domain.seed_vocabulary import QUERY_ALIASES, QUERY_HINTS, QUERY_LISTS
from followthrough.services.errors import located
from followthrough.tasktypes import type_name

F = TypeVar("F", bound=Callable[..., Any])

_ACCEPTED: dict[int, frozenset[str]] = {}
_REPEATABLE: dict[int, frozenset[str]] = {}


def takes_query(*names: str) -> Callable[[F], F]:
    """Declare the query parameters an endpoint reads from ``request.query_params`` itself."""
    def mark(endpoint: F) -> F:
        endpoint.__query_names__ = frozenset(names)  # type: ignore[attr-defined]
        return endpoint
    return mark


def any_query(endpoint: F) -> F:
    """An endpoint whose answer does not depend on its query string."""
    endpoint.__any_query__ = True  # type: ignore[attr-defined]
    return endpoint


def accepted(route: APIRoute) -> frozenset[str]:
    """The query parameters a route takes: those its signature and dependencies declare, and those it
    says it reads itself."""
    found = _ACCEPTED.get(id(route))
    if found is None:
        found = frozenset(_declared(route.dependant)) | getattr(route.endpoint, "__query_names__", frozenset())
        _ACCEPTED[id(route)] = found
    return found


def repeatable(route: APIRoute) -> frozenset[str]:
    """The query parameters a route takes more than once (a list: ``?status=a&status=b``); any other one sent
    twice, under any of its spellings, is a 422 rather than one value silently winning."""
    found = _REPEATABLE.get(id(route))
    if found is None:
        found = frozenset(_lists(route.dependant)) | getattr(route.endpoint, "__query_names__", frozenset())
        _REPEATABLE[id(route)] = found
    return found


def _lists(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params if _is_list(p.field_info.annotation)}
    for sub in dependant.dependencies:
        names |= _lists(sub)
    return names


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_list(a) for a in get_args(annotation) if a is not type(None))
    return origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple)


def _declared(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared(sub)
    return names


def _ours(key: str, taken: frozenset[str]) -> str | None:
    """The declared parameter a seed's key stands for on this route, if any."""
    for candidate in (QUERY_ALIASES.get(key), to_snake(key)):
        if candidate is not None and candidate != key and candidate in taken:
            return candidate
    return None


def _whole(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def _value(name: str, value: str) -> str:
    if name == "status":
        return value.strip().lower()
    if name == "type" and value:
        return type_name(value)
    return value


async def query_check(request: Request) -> None:
    route = request.scope.get("route")
    raw = request.scope.get("query_string") or b""
    if not raw or not isinstance(route, APIRoute) or getattr(route.endpoint, "__any_query__", False):
        return
    taken, multi = accepted(route), repeatable(route)
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    given = {key for key, _ in pairs}
    out: list[tuple[str, str]] = []
    problems: list[dict[str, Any]] = []
    page: str | None = None
    seen: dict[str, str] = {}  # each parameter taken, by the key it came first under
    for key, value in pairs:
        name = key if key in taken else _ours(key, taken)
        if name is None and key == "page" and "offset" in taken:
            page = value
            continue
        if name is None:
            hint = QUERY_HINTS.get(key)
            problems.append({"type": "unknown_query_parameter", "loc": ("query", key), "input": value,
                             "msg": f"unknown query parameter {key!r}" + (f" ({hint})" if hint else "")
                                    + f"; this route takes: {', '.join(sorted(taken)) or 'none'}"})
            continue
        if name in seen and name not in multi:
            problems.append({"type": "duplicate_query_parameter", "loc": ("query", key), "input": value,
                             "msg": f"{name} is taken once: {seen[name]!r} gave it already; send one of them"})
            continue
        seen.setdefault(name, key)
        if name != key:
            if name in given:
                problems.append({"type": "duplicate_query_parameter", "loc": ("query", key), "input": value,
                                 "msg": f"{key} and {name} are one parameter; send one of them"})
                continue
            if key in QUERY_ALIASES and not value.strip():  # the seeds send ?tags=&is_scheduled= for none
                continue
            if key in QUERY_LISTS:
                out += [(name, part.strip()) for part in value.split(",") if part.strip()]
                continue
        out.append((name, _value(name, value)))
    if page is not None:
        if "offset" in seen:
            problems.append({"type": "duplicate_query_parameter", "loc": ("query", "page"), "input": page,
                             "msg": "page and offset both say where the page starts; send one of them"})
        elif (number := _whole(page)) is None or not 1 <= number <= 10**6:
            problems.append({"type": "int_parsing", "loc": ("query", "page"), "input": page,
                             "msg": "page must be a whole number from 1 (the first page)"})
        elif number > 1:
            settings = request.app.state.settings
            limit = _whole(next((v for k, v in out if k == "limit"), ""))  # a bad limit is the route's 422
            size = min(limit if limit else settings.page_size_default, settings.page_size_max)
            if "limit" in taken and "limit" not in given:  # the size counted in, whatever the route's default
                out.append(("limit", str(size)))
            out.append(("offset", str((number - 1) * size)))
    if problems:
        raise located(problems)
    if out != pairs:
        # The route's parameters are read from this request's query_params, after this dependency: the
        # rewritten ones. The scope keeps what was sent, for the access log.
        request._query_params = QueryParams(out)
