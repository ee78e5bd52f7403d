"""ampctl's command-line arguments: shared options, aliased groups, and checked parameter types.

Arguments are checked here, before any request, so a malformed one is a usage error
(exit 2) that names the argument instead of a round trip to the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ampd.datasets.semver import is_semver

DEFAULT_ADMIN_URL = "http://localhost:1610"
JOB_STATUSES = (
    "SCHEDULED",
    "RUNNING",
    "STOP_REQUESTED",
    "STOPPING",
    "COMPLETED",
    "STOPPED",
    "ERROR",
    "FATAL",
)
TERMINAL_STATUSES = ("COMPLETED", "STOPPED", "ERROR", "FATAL")
PRUNE_FILTERS = ("terminal", "completed", "stopped", "error")

_NAMESPACE = re.compile(r"^[a-z0-9_]+$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_END_BLOCK = re.compile(r"^(latest|-?\d+)$")
_WORKER_SELECTOR = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*\*?$|^\*$")
_PURL_PREFIX = "pkg:amp/"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Where and how to talk to the Admin API; one per invocation, in `ctx.obj`."""

    admin_url: str = DEFAULT_ADMIN_URL
    auth_token: str | None = None
    json: bool = False


def settings(ctx: click.Context) -> Settings:
    obj = ctx.find_object(Settings)
    if obj is None:  # a subcommand invoked on its own (tests); use the defaults
        obj = ctx.ensure_object(Settings)
    return obj


# --- shared options, accepted on the root and again on every command that calls the API ---


def _set(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        if field == "admin_url":
            value = value.rstrip("/")
        setattr(settings(ctx), field, value)

    return callback


def admin_options(func: F) -> F:
    """`--admin-url`, `--auth-token` and `--json` on a command (they override the root's)."""
    func = click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=_set("json"),
        help="Print the server's JSON instead of tables.",
    )(func)
    func = click.option(
        "--auth-token",
        metavar="TOKEN",
        expose_value=False,
        callback=_set("auth_token"),
        help="Bearer token for the Admin API [env: AMP_AUTH_TOKEN].",
    )(func)
    func = click.option(
        "--admin-url",
        metavar="URL",
        expose_value=False,
        callback=_set("admin_url"),
        help=f"Base URL of the Admin API [env: AMP_ADMIN_URL; default: {DEFAULT_ADMIN_URL}].",
    )(func)
    return func


class AliasedGroup(click.Group):
    """A group whose commands may have aliases (`job ls` for `job list`), shown in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def command(self, *args: Any, aliases: tuple[str, ...] = (), **kwargs: Any) -> Any:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(func: Callable[..., Any]) -> click.Command:
            cmd = register(func)
            for alias in aliases:
                self.aliases[alias] = cmd.name or ""
            return cmd

        return decorator

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest  # the real name, in usage lines too

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            alias = [a for a, target in self.aliases.items() if target == name]
            label = f"{name} ({', '.join(alias)})" if alias else name
            rows.append((label, cmd.get_short_help_str(limit=80)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# --- parameter types ---


@dataclass(frozen=True)
class DatasetName:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DatasetReference:
    namespace: str
    name: str
    revision: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}@{self.revision}"


def parse_dataset_name(text: str) -> DatasetName:
    """`NS/NAME` (or `pkg:amp/NS/NAME`); raises ValueError saying what is wrong."""
    if text.startswith(_PURL_PREFIX):
        text = text[len(_PURL_PREFIX) :]
    namespace, slash, name = text.partition("/")
    if not slash:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME (for example eth/mainnet)")
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r}: expected [a-z0-9_]+")
    if not _NAME.match(name):
        raise ValueError(f"invalid dataset name {name!r}: expected [a-z_][a-z0-9_]*")
    return DatasetName(namespace, name)


def parse_revision(text: str) -> str:
    if text in ("latest", "dev") or _HASH.match(text) or is_semver(text):
        return text
    raise ValueError(
        f"invalid revision {text!r}: expected latest, dev, a version like 1.0.0 "
        "or a 64-hex manifest hash"
    )


def parse_dataset_reference(text: str) -> DatasetReference:
    """`NS/NAME@REV`; without `@REV` the reference means `@latest`."""
    fqn, at, revision = text.partition("@")
    name = parse_dataset_name(fqn)
    if at and not revision:
        raise ValueError(f"{text!r} has an empty revision after '@'")
    return DatasetReference(name.namespace, name.name, parse_revision(revision or "latest"))


class _Checked(click.ParamType):
    """A parameter type from a parse function that raises ValueError with a message."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _semver(text: str) -> str:
    if not is_semver(text):
        raise ValueError(f"invalid version {text!r}: expected a semantic version like 1.0.0")
    return text


def _job_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise ValueError(f"invalid job id {text!r}: expected a positive integer")
    return int(text)


def _end_block(text: str) -> str:
    if not _END_BLOCK.match(text):
        raise ValueError(
            f"invalid end block {text!r}: expected latest, a block number N, "
            "or -N (N blocks behind the chain head)"
        )
    return text


def _worker_selector(text: str) -> str:
    if not _WORKER_SELECTOR.match(text):
        raise ValueError(
            f"invalid worker id {text!r}: expected a node id ([a-zA-Z][a-zA-Z0-9_.-]*) "
            "or a prefix ending in '*'"
        )
    return text


def _worker_id(text: str) -> str:
    if text.endswith("*") or not _WORKER_SELECTOR.match(text):
        raise ValueError(f"invalid worker id {text!r}: expected [a-zA-Z][a-zA-Z0-9_.-]*")
    return text


def _provider_name(text: str) -> str:
    if not _NAME.match(text):
        raise ValueError(f"invalid provider name {text!r}: expected [a-z_][a-z0-9_]*")
    return text


def _status_filter(text: str) -> str:
    if text.lower() in ("active", "all"):
        return text.lower()
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    wrong = [p for p in parts if p not in JOB_STATUSES]
    if wrong or not parts:
        raise ValueError(
            f"invalid status {text!r}: expected active, all, or a comma-separated list of "
            f"{', '.join(s.lower() for s in JOB_STATUSES)}"
        )
    return ",".join(parts)


DATASET_NAME = _Checked("NS/NAME", parse_dataset_name)
DATASET_REFERENCE = _Checked("NS/NAME[@REV]", parse_dataset_reference)
VERSION = _Checked("VERSION", _semver)
JOB_ID = _Checked("JOB_ID", _job_id)
END_BLOCK = _Checked("END_BLOCK", _end_block)
WORKER_SELECTOR = _Checked("WORKER", _worker_selector)
WORKER_ID = _Checked("NODE_ID", _worker_id)
PROVIDER_NAME = _Checked("NAME", _provider_name)
STATUS_FILTER = _Checked("STATUS", _status_filter)
