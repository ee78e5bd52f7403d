"""The `ampctl` command: a client of the Admin API.

Exit codes: 0 on success, 1 when a call fails (the server's error code and message, or
an unreachable admin URL, on one `error:` line of stderr), 2 for a command-line usage error.
"""

from __future__ import annotations

import click

from ampd import __version__
from ampd.cli.ampctl_args import DEFAULT_ADMIN_URL, AliasedGroup, Settings
from ampd.cli.ampctl_dataset import dataset
from ampd.cli.ampctl_job import job
from ampd.cli.ampctl_manifest import manifest
from ampd.cli.ampctl_provider import provider
from ampd.cli.ampctl_worker import worker


@click.group(
    cls=AliasedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--admin-url",
    envvar="AMP_ADMIN_URL",
    default=DEFAULT_ADMIN_URL,
    show_default=True,
    metavar="URL",
    help="Base URL of the Admin API [env: AMP_ADMIN_URL].",
)
@click.option(
    "--auth-token",
    envvar="AMP_AUTH_TOKEN",
    metavar="TOKEN",
    help="Bearer token, when the Admin API requires one [env: AMP_AUTH_TOKEN].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of tables.")
@click.version_option(__version__, prog_name="ampctl")
@click.pass_context
def cli(ctx: click.Context, admin_url: str, auth_token: str | None, as_json: bool) -> None:
    """Manage datasets, jobs, workers and providers of an ampd controller.

    The global options may also be given after the command (`ampctl job ls --json`).
    """
    ctx.obj = Settings(admin_url=admin_url.rstrip("/"), auth_token=auth_token or None, json=as_json)


for group in (dataset, job, worker, provider, manifest):
    cli.add_command(group)


def main() -> None:
    cli(prog_name="ampctl")


if __name__ == "__main__":
    main()
