"""What the commands share: how they fail, how they reach the HTTP API, and how they print tables and JSON."""

import json
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from followthrough.cli import api_client  # The top-level command being run (`tasks` for `followthrough tasks show ...`), for the start of error lines.
invoked = ""


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, ``followthrough COMMAND: message``, and that exit code."""
    print(f"followthrough {invoked}: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def one_of(values: type[Enum]) -> str:
    """An enumerated option's values for its help, ``a, b or c``: in the help's text, which wraps by words,
    rather than in its metavar column, which is too narrow for ten of them."""
    names = [v.value for v in values]
    return f"{', '.join(names[:-1])} or {names[-1]}"


# ---- the HTTP API -------------------------------------------------------------

ApiUrl = Annotated[str | None, typer.Option(
    "--api", metavar="URL", help="the API's base URL (default: FOLLOWTHROUGH_API_URL, else http://API_HOST:API_PORT)")]
Actor = Annotated[str | None, typer.Option(
    "--as", metavar="ACTOR", help="who acts, under anonymous access (default: FOLLOWTHROUGH_ACTOR, else your login "
                                  "name); with FOLLOWTHROUGH_API_KEY the key's user acts")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's answer as it is")]


@contextmanager
def api(url: str | None, actor: str | None = None) -> Iterator[httpx.Client]:
    """A client for the API; an API error ends the command with its message (exit 1, or 2 when the API
    cannot be reached)."""
    try:
        with api_client.client(api_client.api_url(url), api_client.actor_id(actor)) as http:
            yield http
    except api_client.ApiFailure as failure:
        fail(failure.message, failure.exit_code)


# ---- output -----------------------------------------------------------------------

def print_json(value: Any, *, compact: bool = False) -> None:
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")) if compact else \
        json.dumps(value, indent=2, ensure_ascii=False, default=str)
    print(text, flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = (),
                styles: dict[str, dict[str, str]] | None = None) -> None:
    """Columns aligned under their headers, two spaces apart, no borders, so ``awk`` and ``cut`` read the rows
    as well as a person does. ``right`` names right-aligned columns; ``styles`` maps a column to the style of
    each of its values (shown on a terminal only)."""
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold", show_edge=False)
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left",
                         no_wrap=header != headers[-1])
    for row in rows:
        # Text, not str: a cell is printed as it is, never read as Rich markup (a title may hold "[x]").
        table.add_row(*(Text(str(cell), style=(styles or {}).get(header, {}).get(str(cell), ""))
                        for header, cell in zip(headers, row)))
    # On a terminal, its width, where the last column wraps, yet never narrower than the other columns and
    # some of the last need (a wider table runs past the edge, as any long line does); into a pipe or a file,
    # a width no row reaches, so that every row stays one line for the programs that read it.
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    needed = sum(width + 2 for width in widths[:-1]) + min(widths[-1], _LAST_COLUMN_AT_LEAST)
    console = Console(highlight=False, width=max(shutil.get_terminal_size().columns, needed)
                      if sys.stdout.isatty() else 100_000)
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(_TRAILING_SPACE.sub(r"\1", line) + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


# A line's padding, before any style codes that end it (which a plain rstrip would leave it behind).
_TRAILING_SPACE = re.compile(r"\s+((?:\x1b\[[0-9;]*m)*)$")


_LAST_COLUMN_AT_LEAST = 30


STATUS_STYLES = {"completed": "green", "awaiting_approval": "yellow", "paused": "yellow", "failed": "red",
                 "rejected": "red", "expired": "red", "cancelled": "dim"}


def when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")
