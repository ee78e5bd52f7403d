"""The `ampctl` command: a client of the Admin API."""

from __future__ import annotations

import click

from ampd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--admin-url",
    envvar="AMP_ADMIN_URL",
    default="http://localhost:1610",
    show_default=True,
    help="Base URL of the Admin API [env: AMP_ADMIN_URL].",
)
@click.option("--auth-token", envvar="AMP_AUTH_TOKEN", help="Bearer token [env: AMP_AUTH_TOKEN].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(__version__, prog_name="ampctl")
@click.pass_context
def cli(ctx: click.Context, admin_url: str, auth_token: str | None, as_json: bool) -> None:
    """Manage datasets, jobs, workers and providers of an ampd controller."""
    ctx.obj = {"admin_url": admin_url.rstrip("/"), "auth_token": auth_token, "json": as_json}


def main() -> None:
    cli(prog_name="ampctl")


if __name__ == "__main__":
    main()
