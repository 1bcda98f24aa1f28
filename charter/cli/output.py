"""How commands answer: a table (or a line) for people, ``--json`` for scripts, and
the one place that turns a failure into a message and an exit status."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, TypeVar

import click
import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from charter.client import CharterClient, _plain
from charter.sdk.errors import CharterAPIError, ChecksumMismatch, FreezeFailed
from charter.sdk.uploads import SourceError

T = TypeVar("T")

console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


class UsageError(Exception):
    """A bad argument the API never saw (exit status 2)."""


class Failure(Exception):
    """A command that could not do its work, for a reason the message says (exit 1)."""


class HandledGroup(TyperGroup):
    """The root group: every command runs inside :meth:`invoke`, so an API error, an
    unreachable gateway or a bad file is reported here, once, as a line on stderr
    with a non-zero status (1; 2 for a bad argument) and never as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharterAPIError as exc:
            _fail(exc.message + (f" [request {exc.request_id}]" if exc.request_id else ""), 1)
        except httpx.TransportError as exc:
            url = getattr(getattr(exc, "request", None), "url", "the gateway")
            _fail(f"cannot reach {url}: {exc or type(exc).__name__}", 1)
        except (Failure, FreezeFailed, ChecksumMismatch, TimeoutError) as exc:
            _fail(str(exc), 1)
        except (UsageError, SourceError, FileNotFoundError) as exc:
            _fail(str(exc), 2)
        except KeyboardInterrupt:  # Ctrl-C during a watch: the job or run goes on
            _fail("interrupted (the job or run itself continues)", 130)


def _fail(message: str, code: int) -> None:
    errors.print(f"[red]error[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def client() -> CharterClient:
    return CharterClient()


def take(items: Iterable[T], limit: int | None) -> list[T]:
    """The first ``limit`` items (all with None), reading no further page than needed."""
    out: list[T] = []
    for item in items:
        if limit is not None and len(out) >= limit:
            break
        out.append(item)
    return out


def parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not JSON: {exc}") from exc


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "value"):  # an enum
        value = value.value
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    if isinstance(value, dict | list):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(value)


def field(resource: Any, name: str) -> Any:
    return resource.get(name) if isinstance(resource, dict) else getattr(resource, name, None)


def table(
    rows: Iterable[Any],
    columns: Sequence[str | tuple[str, Callable[[Any], Any]]],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    """Print ``rows`` as a table of ``columns`` (a field name, or a header and a
    function of the row), or as a JSON list with ``as_json``."""
    rows = list(rows)
    if as_json:
        emit_json(rows)
        return
    specs = [(c, lambda r, c=c: field(r, c)) if isinstance(c, str) else c for c in columns]
    cells = [[cell(get(row)) for _, get in specs] for row in rows]
    out = Table(title=title)
    for i, (header, _) in enumerate(specs):
        # Ids and refs are for copying: never cut or folded (other columns give way).
        whole = header in {"id", "ref"} or header.endswith("_id")
        width = max((len(r[i]) for r in cells), default=0) if whole else None
        out.add_column(header, no_wrap=whole, min_width=width or None)
    for values in cells:
        out.add_row(*(escape(v) for v in values))
    console.print(out)


def details(resource: Any, *, as_json: bool, skip: Sequence[str] = ()) -> None:
    """One resource: a two-column table of its fields, or its JSON."""
    if as_json:
        emit_json(resource)
        return
    data = _plain(resource)
    out = Table("field", "value", show_header=False)
    for name, value in data.items():
        if name not in skip:
            out.add_row(name, escape(cell(value)))
    console.print(out)


def details_and_table(
    resource: Any,
    rows: str,
    columns: Sequence[str | tuple[str, Callable[[Any], Any]]],
    *,
    as_json: bool,
    skip: Sequence[str] = (),
) -> None:
    """One resource's fields, then its list ``rows`` as a table (``skip`` and ``rows``
    left out of the fields); or its JSON."""
    if as_json:
        emit_json(resource)
        return
    details(resource, as_json=False, skip=(*skip, rows))
    table(_plain(resource)[rows], columns, as_json=False)
