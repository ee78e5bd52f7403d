"""ampctl without a server: argument checking, help, and how results are rendered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from ampd.cli import ampctl_output as out
from ampd.cli import ampctl_views as views
from ampd.cli.ampctl import cli
from ampd.cli.ampctl_args import DatasetReference, parse_dataset_reference
from ampd.cli.ampctl_watch import Target, _Rates, job_target, render

HASH = "ab" * 32
DEAD_URL = "http://127.0.0.1:1"  # any request would fail: usage errors must come first


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(
        cli, ["--admin-url", DEAD_URL, *args], catch_exceptions=False, prog_name="ampctl"
    )


def plain(renderable: object, width: int = 160) -> str:
    console = Console(width=width, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


# --- references ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eth/mainnet", DatasetReference("eth", "mainnet", "latest")),
        ("eth/mainnet@1.0.0", DatasetReference("eth", "mainnet", "1.0.0")),
        ("eth/mainnet@1.0.0-rc.1+b5", DatasetReference("eth", "mainnet", "1.0.0-rc.1+b5")),
        ("_/x@dev", DatasetReference("_", "x", "dev")),
        (f"my_ns/_data@{HASH}", DatasetReference("my_ns", "_data", HASH)),
        ("pkg:amp/eth/mainnet@latest", DatasetReference("eth", "mainnet", "latest")),
    ],
)
def test_dataset_reference(text: str, expected: DatasetReference) -> None:
    assert parse_dataset_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mainnet", "is not NAMESPACE/NAME"),
        ("Eth/mainnet", "invalid namespace 'Eth'"),
        ("eth/9lives", "invalid dataset name '9lives'"),
        ("eth/main-net", "invalid dataset name 'main-net'"),
        ("eth/mainnet@", "empty revision"),
        ("eth/mainnet@v1", "invalid revision 'v1'"),
        ("eth/mainnet@1.0", "invalid revision '1.0'"),
        ("eth/mainnet@ABAB", "invalid revision"),
    ],
)
def test_bad_dataset_reference(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dataset_reference(text)


# --- usage errors exit 2 before any request ---


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("dataset", "inspect", "Bad/name"), "invalid namespace 'Bad'"),
        (("dataset", "deploy", "eth/mainnet@x.y"), "invalid revision"),
        (("dataset", "deploy", "eth/mainnet", "--end-block", "soon"), "invalid end block"),
        (("dataset", "deploy", "eth/mainnet", "--parallelism", "0"), "--parallelism"),
        (("dataset", "deploy", "eth/mainnet", "--worker-id", "-x"), "invalid worker id"),
        (("dataset", "versions", "eth/mainnet@1.0.0"), "invalid dataset name"),
        (("dataset", "register", "eth/mainnet", "/nonexistent.json"), "does not exist"),
        (("job", "inspect", "abc"), "invalid job id 'abc'"),
        (("job", "stop", "0"), "invalid job id '0'"),
        (("job", "list", "-s", "done"), "invalid status 'done'"),
        (("job", "list", "-l", "1001"), "1001"),
        (("job", "prune", "-s", "running"), "'running' is not one of"),
        (("worker", "inspect", "9nine"), "invalid worker id"),
        (("provider", "inspect", "my-rpc"), "invalid provider name 'my-rpc'"),
        (("provider", "register", "ok", "/nonexistent.toml"), "does not exist"),
        (("manifest", "generate", "--kind", "evm-rpc"), "--network"),
        (("job", "bogus"), "No such command 'bogus'"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_register_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    file = tmp_path / "manifest.json"
    file.write_text("{not json")
    result = invoke("dataset", "register", "eth/mainnet", str(file), "--tag", "1.0.0")
    assert result.exit_code == 2 and "is not a JSON manifest" in result.output
    file.write_text("[1, 2]")
    result = invoke("dataset", "register", "eth/mainnet", str(file))
    assert result.exit_code == 2 and "must hold a JSON object" in result.output
    file.write_text("{}")
    result = invoke("dataset", "register", "eth/mainnet", str(file), "--tag", "latest")
    assert result.exit_code == 2 and "invalid version 'latest'" in result.output


def test_provider_file_name_must_agree(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('name = "other"\nkind = "evm-rpc"\n')
    result = invoke("provider", "register", "mine", str(file))
    assert result.exit_code == 2 and "names the provider 'other'" in result.output
    file.write_text("kind = [")
    result = invoke("provider", "register", "mine", str(file))
    assert result.exit_code == 2 and "is not a TOML file" in result.output


def test_invalid_admin_url_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--admin-url", "localhost:1610", "job", "ls"])
    assert result.exit_code == 2 and "invalid admin URL 'localhost:1610'" in result.output


# --- help and aliases ---


def _leaf_commands() -> list[tuple[str, str]]:
    ctx = click.Context(cli)
    return [
        (group, name)
        for group in cli.list_commands(ctx)
        for name in cli.get_command(ctx, group).list_commands(ctx)  # type: ignore[union-attr]
    ]


@pytest.mark.parametrize(("group", "name"), _leaf_commands())
def test_every_command_has_help(group: str, name: str) -> None:
    result = invoke(group, name, "--help")
    assert result.exit_code == 0
    assert f"Usage: ampctl {group} {name}" in result.output
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{group} {name} needs a description"


@pytest.mark.parametrize(
    ("alias", "command"),
    [
        (("dataset", "ls"), "dataset list"),
        (("dataset", "get"), "dataset inspect"),
        (("dataset", "reg"), "dataset register"),
        (("dataset", "dep"), "dataset deploy"),
        (("job", "ls"), "job list"),
        (("job", "get"), "job inspect"),
        (("job", "remove"), "job rm"),
        (("worker", "ls"), "worker list"),
        (("worker", "get"), "worker inspect"),
        (("provider", "ls"), "provider list"),
        (("provider", "get"), "provider inspect"),
        (("provider", "remove"), "provider rm"),
    ],
)
def test_aliases(alias: tuple[str, ...], command: str) -> None:
    result = invoke(*alias, "--help")
    assert result.exit_code == 0 and f"Usage: ampctl {command} " in result.output


def test_group_help_lists_aliases() -> None:
    result = invoke("job", "--help")
    assert "list (ls)" in result.output and "rm (remove)" in result.output


def test_manifest_generate_needs_no_server(tmp_path: Path) -> None:
    result = invoke("manifest", "generate", "--kind", "evm-rpc", "--network", "base")
    assert result.exit_code == 0
    manifest = json.loads(result.stdout)
    assert manifest["network"] == "base" and set(manifest["tables"]) == {
        "blocks",
        "logs",
        "transactions",
    }


# --- the watch's end block ---


def _job(end_block: object) -> dict[str, object]:
    return {"id": 7, "status": "RUNNING", "descriptor": {"end_block": end_block}}


def _segments(*ranges: tuple[int, int | None]) -> list[dict[str, object]]:
    return [{"start_block": a, "end_block": b} for a, b in ranges]


def test_target_from_a_numeric_descriptor() -> None:
    assert job_target(_job("500"), _segments((100, 300), (301, 500)), []) == Target(100, 500)


def test_target_of_latest_from_the_segments() -> None:
    assert job_target(_job("latest"), _segments((0, 99), (100, 150)), []) == Target(0, 150)


def test_target_from_the_scheduled_event_when_nothing_was_planned() -> None:
    events = [{"event_type": "SCHEDULED", "detail": {"end_block": 42, "segments": 0}}]
    assert job_target(_job("-10"), [], events) == Target(None, 42)


def test_target_of_a_continuous_job() -> None:
    assert job_target(_job(None), _segments((0, 99), (100, None)), []) == Target(0, None)


# --- rendering ---

_PROGRESS = {
    "job_id": 7,
    "job_status": "RUNNING",
    "tables": {
        "blocks": {
            "current_block": 49,
            "start_block": 0,
            "files_count": 2,
            "total_size_bytes": 2048,
        },
        "logs": {"current_block": None, "start_block": 0, "files_count": 0, "total_size_bytes": 0},
    },
}


def test_render_bounded_job_has_a_bar_per_table() -> None:
    text = plain(render(_job("99"), Target(0, 99), _PROGRESS))
    blocks = next(line for line in text.splitlines() if line.startswith("blocks"))
    assert "━" in blocks and "49/99" in blocks and "50.0%" in blocks and "2.0 KiB" in blocks
    logs = next(line for line in text.splitlines() if line.startswith("logs"))
    assert "-/99" in logs and "0.0%" in logs
    assert "Job 7" in text and "RUNNING" in text and "blocks 0..99" in text


def test_render_continuous_job_shows_block_and_rate() -> None:
    rates = _Rates()
    rates.add("blocks", 10, 100.0)
    rates.add("blocks", 49, 102.0)
    text = plain(render(_job(None), Target(0, None), _PROGRESS, rates))
    blocks = next(line for line in text.splitlines() if line.startswith("blocks"))
    assert "following the chain head" in blocks and "#49" in blocks and "19.5 blk/s" in blocks
    assert "━" not in text
    assert "(continuous)" in text


def test_render_reconnecting_note() -> None:
    text = plain(render(_job("9"), Target(0, 9), _PROGRESS, note="(cannot reach X; retrying)"))
    assert "retrying" in text.splitlines()[0]


def test_progress_table_shows_the_error_detail() -> None:
    failed = {
        **_PROGRESS,
        "job_status": "ERROR",
        "detail": {"error_code": "E", "error_message": "m"},
    }
    text = plain(views.job_progress(failed))
    assert "E: m" in text and "ERROR" in text


def test_server_values_are_not_markup() -> None:
    text = plain(views.provider_list({"providers": [{"name": "p", "url": "[bold]x[/bold]"}]}))
    assert "[bold]x[/bold]" in text


@pytest.mark.parametrize(
    ("n", "expected"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**30, "5.0 GiB")],
)
def test_size(n: int | None, expected: str) -> None:
    assert out.size(n) == expected


def test_timestamp_and_age() -> None:
    assert out.timestamp("2026-01-02T03:04:05.678+00:00") == "2026-01-02 03:04:05"
    assert out.timestamp("garbage") == "garbage"
    now = datetime(2026, 1, 2, 4, 4, 5, tzinfo=UTC)
    assert out.age("2026-01-02T03:04:05+00:00", now) == "1h ago"
    assert out.age("2026-01-02T04:04:00+00:00", now) == "5s ago"
    assert out.age(None, now) == ""


def test_worker_list_shows_load_against_capacity() -> None:
    shown = plain(
        views.worker_list(
            {
                "workers": [
                    {"node_id": "w1", "status": "active", "active_segments": 2, "capacity": 4}
                ]
            }
        )
    )
    assert "SEGMENTS / CAPACITY" in shown and "2 / 4" in shown
    assert "Capacity" in plain(views.worker_detail({"node_id": "w1", "capacity": 4, "info": {}}))


def test_empty_lists_say_so() -> None:
    assert "No jobs match" in plain(views.job_list({"jobs": []}))
    assert "No workers" in plain(views.worker_list({"workers": []}))
    assert "--after 3" in plain(
        views.job_list(
            {"jobs": [{"id": 3, "status": "RUNNING", "descriptor": {}}], "next_cursor": 3}
        )
    )
