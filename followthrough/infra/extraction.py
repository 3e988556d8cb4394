"""Extraction: structured fields out of an HTML page, by CSS selectors, checked against a JSON Schema.

Three parts, usable on their own (the ``extract`` task type and its transport use all three):

- ``extract_fields(html, fields)``: pure; each field is a CSS selector (soupsieve, through BeautifulSoup),
  the element's text or one attribute, one match or ``all`` of them, coerced to string, number, integer or
  boolean. A required field that matches nothing is an error naming it.
- ``check_against(data, schema)``: a JSON Schema (draft 2020-12) check whose errors name the field.
- ``fetch_page(client, url, ...)``: a GET through the caller's client (for task work, the SSRF-guarded one
  of followthrough/infra/outbound.py), with a timeout, a size limit and a content-type check.

Errors are ``ExtractionError`` (the page or the data is wrong: retrying cannot help) and ``FetchError``
(``retryable`` says whether a later attempt may succeed; ``refused`` that the SSRF guard refused the target).
"""

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx
from bs4 import BeautifulSoup, Tag
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from followthrough.domain.extraction_rules import DEFAULT_MAX_BYTES, FieldSpec
from followthrough.infra.outbound import OutboundRefused

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_REDIRECTS = 5
# Answers that mean "later", as for sends (followthrough/activities/transports/http.py).
_RETRYABLE_4XX = frozenset({408, 425, 429})
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_TRUE = frozenset({"true", "yes", "y", "1", "on", "checked", "selected"})
_FALSE = frozenset({"false", "no", "n", "0", "off", ""})


class ExtractionError(ValueError):
    """The page does not hold what the fields or the schema ask for; ``field`` names the field when one is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"field {field!r}: {message}" if field else message)
        self.field = field


class FetchError(Exception):
    def __init__(self, message: str, retryable: bool, refused: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable, self.refused, self.status = retryable, refused, status


# ---- the pure part --------------------------------------------------------------

def extract_fields(html: str, fields: dict[str, FieldSpec]) -> dict[str, Any]:
    """The fields found in ``html``; optional fields that match nothing are left out."""
    soup = BeautifulSoup(html, "html.parser")
    result: dict[str, Any] = {}
    for name, spec in fields.items():
        elements = soup.select(spec.selector) if spec.all else [e for e in [soup.select_one(spec.selector)] if e]
        values = [v for v in (_raw_value(e, spec) for e in elements) if v is not None]
        if not values:
            if spec.required:
                what = f"no element has the attribute {spec.attribute!r}" if elements and spec.attribute \
                    else "matched nothing"
                raise ExtractionError(f"selector {spec.selector!r} {what}", name)
            if spec.all:
                result[name] = []
            continue
        coerced = [coerce(v, spec.type, name) for v in values]
        result[name] = coerced if spec.all else coerced[0]
    return result


def _raw_value(element: Tag, spec: FieldSpec) -> str | None:
    if spec.attribute is None:
        return " ".join(element.get_text(" ").split())
    value = element.get(spec.attribute)
    if value is None:
        return None
    # Multi-valued attributes (class, rel) come as lists.
    return " ".join(value) if isinstance(value, list) else str(value).strip()


def coerce(text: str, kind: str, field: str) -> Any:
    """``text`` as the field's type; a value that is not one is an error naming the field."""
    if kind == "string":
        return text
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ExtractionError(f"{text[:80]!r} is not a boolean (true/false, yes/no, 1/0, on/off)", field)
    # Numbers as pages show them: "$1,234.50", "42 items", "-3".
    match = _NUMBER.search(text)
    if match is None:
        raise ExtractionError(f"{text[:80]!r} holds no {kind}", field)
    number = float(match.group().replace(",", ""))
    if not math.isfinite(number):
        raise ExtractionError(f"{text[:80]!r} is not a finite number", field)
    if kind == "integer":
        if not number.is_integer():
            raise ExtractionError(f"{text[:80]!r} is not an integer", field)
        return int(number)
    return int(number) if number.is_integer() and "." not in match.group() else number


def check_against(data: dict[str, Any], schema: dict[str, Any]) -> None:
    """Raise ExtractionError listing every way ``data`` violates ``schema``, each naming its field."""
    try:
        errors = sorted(Draft202012Validator(schema).iter_errors(data),
                        key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as err:  # a local $ref to nothing (#/$defs/missing)
        raise ExtractionError(f"the schema cannot be used: {err}") from err
    if not errors:
        return
    problems = []
    for err in errors[:10]:
        path = list(err.absolute_path)
        where = f"field {'.'.join(map(str, path))!r}: " if path else ""
        problems.append(f"{where}{err.message}")
    failure = ExtractionError("the extracted data does not match the schema: " + "; ".join(problems))
    # The first field to blame, for callers that point at it.
    failure.field = next((str(e.absolute_path[0]) for e in errors if e.absolute_path), None)
    raise failure


# ---- the fetch ------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    html: str
    size: int


async def fetch_page(client: httpx.AsyncClient, url: str, *, timeout: float = 10,
                     max_bytes: int = DEFAULT_MAX_BYTES, headers: dict[str, str] | None = None) -> Page:
    """GET ``url`` through ``client``, following at most MAX_REDIRECTS redirects (each hop connects through the
    client, so a guarded client checks every one); only 2xx HTML answers of at most ``max_bytes`` are taken."""
    current = httpx.URL(url)
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            request = client.build_request("GET", current, timeout=timeout,
                                           headers={"Accept": "text/html,application/xhtml+xml;q=0.9"}
                                           | (headers or {}))
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect and "location" in response.headers:
                    current = current.join(response.headers["location"])
                    if current.scheme not in ("http", "https"):
                        raise FetchError(f"GET {url} redirected to a non-http(s) URL: {current}", retryable=False)
                    continue
                return await _read(response, str(current), max_bytes)
            finally:
                await response.aclose()
        raise FetchError(f"GET {url}: more than {MAX_REDIRECTS} redirects", retryable=False)
    except OutboundRefused as err:
        raise FetchError(f"GET {current} {err}", retryable=False, refused=True) from err
    except httpx.TimeoutException as err:
        raise FetchError(f"GET {current} timed out ({type(err).__name__})", retryable=True) from err
    except httpx.TransportError as err:
        raise FetchError(f"GET {current} failed: {type(err).__name__}: {err}", retryable=True) from err


async def _read(response: httpx.Response, url: str, max_bytes: int) -> Page:
    status = response.status_code
    if not 200 <= status < 300:
        retryable = status >= 500 or status in _RETRYABLE_4XX
        raise FetchError(f"GET {url} answered {status} {response.reason_phrase}".rstrip(), retryable, status=status)
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in HTML_TYPES:
        raise FetchError(f"GET {url} answered {content_type or 'no content type'}, not HTML", retryable=False,
                         status=status)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"GET {url}: the page is {declared} bytes, over the limit of {max_bytes}", retryable=False,
                         status=status)
    raw = bytearray()
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > max_bytes:
            raise FetchError(f"GET {url}: the page is over the limit of {max_bytes} bytes", retryable=False,
                             status=status)
    html = bytes(raw).decode(response.encoding or "utf-8", errors="replace")
    return Page(url=url, status=status, content_type=content_type, html=html, size=len(raw))


async def extract(client: httpx.AsyncClient | None, fields: dict[str, FieldSpec], *, url: str | None = None,
                  html: str | None = None, schema: dict[str, Any] | None = None, timeout: float = 10,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict[str, Any], Page | None]:
    """Fetch (when given a URL) and extract, then check against ``schema``: the data, and the page fetched."""
    if (url is None) == (html is None):
        raise ValueError("give either a URL or HTML")
    page = None
    if url is not None:
        if client is None:
            raise ValueError("fetching a URL needs a client")
        page = await fetch_page(client, url, timeout=timeout, max_bytes=max_bytes)
        html = page.html
    assert html is not None
    # Parsing a large page takes a while: off the event loop, so the caller's heartbeats keep going.
    data = await asyncio.to_thread(extract_fields, html, fields)
    if schema is not None:
        check_against(data, schema)
    return data, page
