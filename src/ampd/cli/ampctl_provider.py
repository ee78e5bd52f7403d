"""`ampctl provider`: register, list, inspect and remove data providers (RPC endpoints)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from ampd.cli import ampctl_output as out
from ampd.cli import ampctl_views as views
from ampd.cli.ampctl_args import PROVIDER_NAME, AliasedGroup, admin_options, settings
from ampd.cli.ampctl_client import get_and_emit, open_client, path


@click.group(cls=AliasedGroup)
def provider() -> None:
    """Manage providers: the RPC endpoints datasets are extracted from.

    A provider is a TOML file with `kind`, `network`, `url` and optional limits; the
    controller stores it as `<providers_dir>/<NAME>.toml`. `${VAR}` placeholders are kept
    as written and resolved from the environment of the process that uses the provider.
    """


def _read_provider_file(name: str, file: Path) -> dict[str, Any]:
    try:
        fields = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{file} is not a TOML file: {exc}", param_hint="FILE") from None
    written = fields.pop("name", name)
    if written != name:
        raise click.BadParameter(
            f"{file} names the provider {written!r}, but the command names it {name!r}",
            param_hint="FILE",
        )
    return fields


@provider.command()
@click.argument("name", metavar="NAME", type=PROVIDER_NAME)
@click.argument(
    "file", metavar="FILE.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@admin_options
@click.pass_context
def register(ctx: click.Context, name: str, file: Path) -> None:
    """Create or replace provider NAME from the TOML in FILE.

    \b
    Example FILE:
      kind = "evm-rpc"
      network = "mainnet"
      url = "${ETH_MAINNET_RPC_URL}"
    """
    body = {"name": name, **_read_provider_file(name, file)}
    with open_client(ctx) as client:
        result = client.post("/providers", body)
    if settings(ctx).json:
        out.print_json(result)
    else:
        out.show(views.provider_detail(result or body))


@provider.command(name="list", aliases=("ls",))
@admin_options
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List providers (secrets show as their ${VAR} placeholders)."""
    get_and_emit(ctx, "/providers", views.provider_list)


@provider.command(aliases=("get",))
@click.argument("name", metavar="NAME", type=PROVIDER_NAME)
@admin_options
@click.pass_context
def inspect(ctx: click.Context, name: str) -> None:
    """Show one provider's configuration."""
    get_and_emit(ctx, path("providers", name), views.provider_detail)


@provider.command(aliases=("remove",))
@click.argument("name", metavar="NAME", type=PROVIDER_NAME)
@admin_options
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Delete provider NAME (nothing happens if it does not exist)."""
    with open_client(ctx) as client:
        client.delete(path("providers", name))
    if settings(ctx).json:
        out.print_json({"name": name, "deleted": True})
    else:
        out.show(out.text(f"Removed provider {name}."))
