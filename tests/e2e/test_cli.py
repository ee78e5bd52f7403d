"""The ampd command line: required options, exit codes, help, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.procs import AMPD, run


def clean_env() -> dict[str, str]:
    return {"AMP_CONFIG": "", "AMP_NODE_ID": ""}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text('[metadata_db]\nurl = "postgresql:///x?host=/nonexistent"\n')
    return path


def test_worker_without_node_id_names_flag_and_env(config: Path) -> None:
    result = run([AMPD, "--config", str(config), "worker"], env=clean_env())
    assert result.returncode == 1
    assert "--node-id" in result.stderr and "AMP_NODE_ID" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["controller", "worker", "server", "migrate"])
def test_commands_without_config_name_flag_and_env(command: str) -> None:
    result = run(
        [AMPD, command, *(["--node-id", "w1"] if command == "worker" else [])], env=clean_env()
    )
    assert result.returncode == 1
    assert "--config" in result.stderr and "AMP_CONFIG" in result.stderr


def test_config_from_env_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("bogus_key = 1\n")
    result = run([AMPD, "controller"], env={"AMP_CONFIG": str(path)})
    assert result.returncode == 1
    assert "unknown config key 'bogus_key'" in result.stderr


def test_wrong_type_exits_1_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('segment_blocks = "lots"\n')
    result = run([AMPD, "--config", str(path), "controller"], env=clean_env())
    assert result.returncode == 1
    assert "segment_blocks" in result.stderr and "'lots'" in result.stderr


def test_invalid_node_id(config: Path) -> None:
    result = run([AMPD, "--config", str(config), "worker", "--node-id", "9lives"], env=clean_env())
    assert result.returncode == 1
    assert "invalid node id '9lives'" in result.stderr


def test_bad_log_level_is_a_clear_error(config: Path) -> None:
    result = run([AMPD, "--config", str(config), "migrate"], env={"AMP_LOG": "loud"})
    assert result.returncode == 1
    assert "AMP_LOG" in result.stderr and "'loud'" in result.stderr


def test_usage_error_exits_2() -> None:
    assert run([AMPD, "solo", "--no-such-flag"]).returncode == 2


@pytest.mark.parametrize(
    "command", [[], ["solo"], ["controller"], ["worker"], ["server"], ["migrate"]]
)
def test_help_explains_each_command(command: list[str]) -> None:
    result = run([AMPD, *command, "--help"])
    assert result.returncode == 0
    assert "Usage: ampd" in result.stdout
    if command == ["worker"]:
        assert "AMP_NODE_ID" in result.stdout
    if command == ["solo"]:
        assert "AMP_DIR" in result.stdout and "--admin-server" in result.stdout
