"""How ampctl prints: the server's JSON with `--json`, rich tables otherwise.

The building blocks of every view: value formatting, key/value grids and tables. Values
from the server are wrapped in `Text`, never parsed as rich markup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ampd.cli.ampctl_args import settings

NONE = "-"


def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr); wide when piped so tables do not fold."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=200)
    return out


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def show(renderable: RenderableType, stderr: bool = False) -> None:
    """Print to the terminal as is; piped, without the padding rich leaves at line ends."""
    out = console(stderr)
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    click.echo("\n".join(lines), err=stderr)


def emit(ctx: click.Context, data: Any, render: Callable[[Any], RenderableType]) -> None:
    """Print `data` as JSON under `--json`, else as `render(data)`."""
    if settings(ctx).json:
        print_json(data)
    else:
        show(render(data))


# --- value formatting ---


def text(value: Any) -> Text:
    if value is None or value == "":
        return Text(NONE, style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list | tuple):
        return Text(", ".join(str(v) for v in value) or NONE)
    if isinstance(value, dict):
        return Text(json.dumps(value, separators=(",", ":"), sort_keys=True))
    return Text(str(value))


def short_hash(value: str | None) -> str | None:
    return value[:12] if value else value


def size(n: int | None) -> str:
    if n is None:
        return NONE
    amount = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def timestamp(value: str | None) -> str | None:
    """An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` UTC; the input unchanged if unparsable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(value: str | None, now: datetime | None = None) -> str:
    """`3s ago`, `5m ago`, `2h ago`, `4d ago`; empty if unparsable."""
    try:
        moment = datetime.fromisoformat(value or "")
    except ValueError:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def block_range(start: int | None, end: int | None) -> str:
    return f"{start}..{'head' if end is None else end}"


def key_values(rows: Iterable[tuple[str, Any]], title: str | None = None) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, Text) else text(value))
    return Group(Text(title, style="bold underline"), grid) if title else grid


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], empty: str) -> RenderableType:
    rows = [list(r) for r in rows]
    if not rows:
        return Text(empty, style="dim")
    out = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else text(cell) for cell in row))
    return out


def status_text(status: str | None) -> Text:
    style = {
        "COMPLETED": "green",
        "RUNNING": "cyan",
        "SCHEDULED": "blue",
        "STOPPED": "yellow",
        "STOP_REQUESTED": "yellow",
        "STOPPING": "yellow",
        "ERROR": "red",
        "FATAL": "bold red",
        "active": "green",
        "stale": "yellow",
        "stopped": "dim",
    }.get(status or "", "")
    return Text(status or NONE, style=style)
