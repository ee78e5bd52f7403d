"""Config loading: file, AMP_CONFIG_* overrides, path resolution, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ampd.config import ConfigError, load_config, split_addr
from ampd.logs import parse_level


def write(folder: Path, text: str) -> Path:
    path = folder / "config.toml"
    path.write_text(text)
    return path


def test_env_overrides_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[metadata_db]\nurl = "postgresql://file/db"\npool_size = 3\n')
    config = load_config(path, env={"AMP_CONFIG_METADATA_DB__URL": "postgresql://env/db"})
    assert config.metadata_db.url == "postgresql://env/db"
    assert config.metadata_db.pool_size == 3  # untouched keys keep the file's value


def test_env_values_are_converted_to_the_key_type(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    env = {
        "AMP_CONFIG_SEGMENT_BLOCKS": "500",
        "AMP_CONFIG_POLL_INTERVAL_SECS": "0.25",
        "AMP_CONFIG_METADATA_DB__AUTO_MIGRATE": "false",
        "AMP_CONFIG_WRITER__COMPRESSION": "lz4",
    }
    config = load_config(path, env=env)
    assert config.segment_blocks == 500
    assert config.poll_interval_secs == 0.25
    assert config.metadata_db.auto_migrate is False
    assert config.writer.compression == "lz4"


def test_connect_timeout_defaults_to_60s_and_comes_from_the_environment(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).metadata_db.connect_timeout_secs == 60.0
    env = {"AMP_CONFIG_METADATA_DB__CONNECT_TIMEOUT_SECS": "2"}
    assert load_config(write(tmp_path, ""), env=env).metadata_db.connect_timeout_secs == 2.0
    config = load_config(write(tmp_path, "[metadata_db]\nconnect_timeout_secs = 5\n"), env={})
    assert config.metadata_db.connect_timeout_secs == 5.0


def test_worker_capacity_and_split_size_come_from_the_file_or_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "worker_max_segments = 2\nsplit_min_blocks = 50\n")
    config = load_config(path, env={})
    assert (config.worker_max_segments, config.split_min_blocks) == (2, 50)
    env = {"AMP_CONFIG_WORKER_MAX_SEGMENTS": "1", "AMP_CONFIG_SPLIT_MIN_BLOCKS": "10"}
    config = load_config(path, env=env)
    assert (config.worker_max_segments, config.split_min_blocks) == (1, 10)


def test_relative_paths_resolve_beside_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, 'data_dir = "store/parquet"\nproviders_dir = "/abs/providers"\n')
    config = load_config(path, env={})
    assert config.data_dir == str(folder / "store" / "parquet")
    assert config.providers_dir == "/abs/providers"
    # Unset folders default to data/providers/manifests beside the file.
    assert config.manifests_dir == str(folder / "manifests")


def test_unset_dirs_default_beside_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert (config.data_dir, config.providers_dir, config.manifests_dir) == (
        str(tmp_path / "data"),
        str(tmp_path / "providers"),
        str(tmp_path / "manifests"),
    )


@pytest.mark.parametrize("key", ["data_dir", "providers_dir", "manifests_dir"])
@pytest.mark.parametrize("url", ["s3://bucket/prefix/", "gs://bucket", "az://container/p"])
def test_object_store_dirs_are_kept_as_urls(tmp_path: Path, url: str, key: str) -> None:
    config = load_config(write(tmp_path, f'{key} = "{url}"\n'), env={})
    assert getattr(config, key) == url.rstrip("/")
    assert config.is_local_data_dir == (key != "data_dir")


@pytest.mark.parametrize("key", ["data_dir", "providers_dir", "manifests_dir"])
@pytest.mark.parametrize("url", ["s3://", "ftp://host/x", "gs://Bad_Bucket!"])
def test_malformed_dir_url_names_the_key(tmp_path: Path, url: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}' = .*expected a path, file://PATH, s3://"):
        load_config(write(tmp_path, f'{key} = "{url}"\n'), env={})


def test_defaults_match_the_spec(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.metadata_db.url is None
    assert config.metadata_db.pool_size == 10
    assert config.admin_api_addr == "0.0.0.0:1610"
    assert config.flight_addr == "0.0.0.0:1602"
    assert config.jsonl_addr == "0.0.0.0:1603"
    assert config.segment_blocks == 100_000
    assert config.worker_timeout_secs == 5
    assert config.reconcile_interval_secs == 60
    assert config.shutdown_timeout_secs == 30
    assert config.max_retries == 10
    assert config.worker_max_segments == 4
    assert config.split_min_blocks == 1000
    assert config.writer.compression == "zstd(1)"
    assert config.writer.bytes == 2_147_483_648
    assert config.writer.max_row_group_mb == 512


def test_solo_defaults_listen_on_loopback_and_resolve_in_amp_dir(tmp_path: Path) -> None:
    config = load_config(None, env={}, base_dir=tmp_path, solo=True)
    assert config.admin_api_addr == "127.0.0.1:1610"
    assert config.jsonl_addr == "127.0.0.1:1603"
    assert config.flight_addr == "127.0.0.1:1602"
    assert config.data_dir == str(tmp_path / "data")


def test_solo_keeps_an_explicit_address(tmp_path: Path) -> None:
    path = write(tmp_path, 'admin_api_addr = "0.0.0.0:9999"\n')
    assert load_config(path, env={}, solo=True).admin_api_addr == "0.0.0.0:9999"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("colour = 1\n", {}, ["unknown config key 'colour'", "no such key"]),
        ('segment_blocks = "many"\n', {}, ["'segment_blocks'", "'many'", "expected an integer"]),
        ("[metadata_db]\npool_size = true\n", {}, ["'metadata_db.pool_size'", "True", "integer"]),
        ("[writer]\nsize = 3\n", {}, ["unknown config key 'writer.size'"]),
        ('[writer]\ncompression = "zip"\n', {}, ["'writer.compression'", "'zip'", "zstd(N)"]),
        ('admin_api_addr = "localhost"\n', {}, ["'admin_api_addr'", "HOST:PORT"]),
        ("poll_interval_secs = 0\n", {}, ["'poll_interval_secs'", "greater than 0"]),
        ("metadata_db = 5\n", {}, ["'metadata_db'", "expected a table"]),
        ("worker_max_segments = 0\n", {}, ["'worker_max_segments'", "0", "at least 1"]),
        (
            "",
            {"AMP_CONFIG_SPLIT_MIN_BLOCKS": "0"},
            ["'split_min_blocks'", "AMP_CONFIG_SPLIT_MIN_BLOCKS", "at least 1"],
        ),
        (
            "",
            {"AMP_CONFIG_SEGMENT_BLOCKS": "abc"},
            ["AMP_CONFIG_SEGMENT_BLOCKS", "'abc'", "integer"],
        ),
        ("", {"AMP_CONFIG_NO_SUCH": "1"}, ["unknown config key 'no_such'", "AMP_CONFIG_NO_SUCH"]),
        ('[metadata_db]\nurl = "mysql://x"\n', {}, ["'metadata_db.url'", "postgresql://"]),
        (
            "[metadata_db]\nconnect_timeout_secs = -1\n",
            {},
            ["'metadata_db.connect_timeout_secs'", "-1", "at least 0"],
        ),
    ],
)
def test_bad_config_names_key_value_and_expectation(
    tmp_path: Path, text: str, env: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    for fragment in expected:
        assert fragment in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "a = = 1"), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_amp_only_sections_are_accepted(tmp_path: Path) -> None:
    text = '[opentelemetry]\ntrace_url = "http://x"\n[writer.compactor]\nactive = false\n'
    config = load_config(write(tmp_path, text), env={})
    assert config.opentelemetry == {"trace_url": "http://x"}


def test_helpers() -> None:
    assert split_addr("127.0.0.1:1610") == ("127.0.0.1", 1610)
    assert parse_level("trace") == 5
    with pytest.raises(ValueError, match="AMP_LOG"):
        parse_level("loud")


def test_keep_alive_interval_has_amps_floor_of_30_seconds(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).keep_alive_secs == 30.0
    assert load_config(write(tmp_path, "keep_alive_interval = 5\n"), env={}).keep_alive_secs == 30.0
    env = {"AMP_CONFIG_KEEP_ALIVE_INTERVAL": "45"}
    assert load_config(write(tmp_path, ""), env=env).keep_alive_secs == 45.0
    with pytest.raises(ConfigError, match="keep_alive_interval"):
        load_config(write(tmp_path, "keep_alive_interval = 0\n"), env={})
