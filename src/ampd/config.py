"""The ampd configuration: a TOML file, overridden key by key from `AMP_CONFIG_*` variables.

Loading validates everything once, at the edge; the rest of the code trusts `Config`.
Relative paths are resolved against the config file's folder (or the amp dir in solo mode
when there is no file), so a `Config` only ever holds absolute paths or object-store URLs.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "AMP_CONFIG_"
_COMPRESSION = re.compile(
    r"^(zstd(\((\d+)\))?|gzip(\((\d+)\))?|brotli(\((\d+)\))?|lz4|snappy|uncompressed)$"
)
_OBJECT_STORE_SCHEMES = ("s3://", "gs://", "az://")
# A bucket or container name: lower case, digits, dots, dashes (underscores: GCS).
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,254}$")


class ConfigError(Exception):
    """An invalid configuration; the message names the key, the value and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_addr(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    return value


class MetadataDbConfig(_Section):
    url: str | None = None
    pool_size: int = Field(10, ge=1)
    auto_migrate: bool = True
    # How long start-up waits for a database that is not up yet (0: try once).
    connect_timeout_secs: float = Field(60.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// or postgres:// URL")
        return value


class WriterConfig(_Section):
    compression: str = "zstd(1)"
    max_row_group_mb: int = Field(512, ge=1)
    bytes: int = Field(2_147_483_648, ge=1)
    segment_flush_interval_secs: float = Field(600.0, gt=0)
    # Memory for the query server's parsed Parquet footers of a remote data dir.
    cache_size_mb: int = Field(1024, ge=0)
    # Accepted so that Amp's config files load unchanged; ampd does not use them.
    bloom_filters: bool | None = None
    overflow: str | None = None
    rows: int | None = None
    compactor: dict[str, Any] | None = None
    collector: dict[str, Any] | None = None

    @field_validator("compression")
    @classmethod
    def _compression(cls, value: str) -> str:
        if not _COMPRESSION.match(value):
            raise ValueError("expected zstd(N), lz4, gzip, brotli, snappy or uncompressed")
        return value


KEEP_ALIVE_FLOOR_SECS = 30


class Config(_Section):
    """The whole configuration. Paths are absolute once loaded through `load_config`."""

    data_dir: str = "data"
    providers_dir: str = "providers"
    manifests_dir: str = "manifests"
    metadata_db: MetadataDbConfig = MetadataDbConfig()
    admin_api_addr: str = "0.0.0.0:1610"
    admin_api_token: str | None = None
    flight_addr: str = "0.0.0.0:1602"
    jsonl_addr: str = "0.0.0.0:1603"
    poll_interval_secs: float = Field(1.0, gt=0)
    segment_blocks: int = Field(100_000, ge=1)
    worker_timeout_secs: float = Field(5.0, gt=0)
    # Processes a worker (and solo's) fetches and converts blocks in; None: one per CPU,
    # 0: in the worker's own process.
    worker_processes: int | None = Field(None, ge=0)
    # How many segments one worker runs at once (the scheduler gives it no more).
    worker_max_segments: int = Field(4, ge=1)
    # The smallest unfinished remainder of a running segment worth splitting for an idle worker.
    split_min_blocks: int = Field(1000, ge=1)
    reconcile_interval_secs: float = Field(60.0, gt=0)
    shutdown_timeout_secs: float = Field(30.0, ge=0)
    max_retries: int = Field(10, ge=0)
    # The memory of all the queries a server runs at once, and of each (MB, 0: no limit).
    max_mem_mb: int = Field(0, ge=0)
    query_max_mem_mb: int = Field(0, ge=0)
    query_timeout_secs: float = Field(300.0, ge=0)
    server_microbatch_max_interval: int = Field(1000, ge=1)  # blocks per streaming microbatch
    # Seconds an idle streaming query waits before a keep-alive batch; as in Amp, never less
    # than KEEP_ALIVE_FLOOR_SECS (see keep_alive_secs).
    keep_alive_interval: int = Field(30, ge=1)
    writer: WriterConfig = WriterConfig()
    # Accepted so that Amp's config files load unchanged; ampd does not use them.
    spill_location: list[str] | None = None
    microbatch_max_interval: int | None = None
    opentelemetry: dict[str, Any] | None = None
    worker_events: dict[str, Any] | None = None

    @field_validator("admin_api_addr", "flight_addr", "jsonl_addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return _check_addr(value)

    @field_validator("data_dir", "providers_dir", "manifests_dir")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if "://" not in value or value.startswith("file://"):
            return value
        scheme, _, rest = value.partition("://")
        bucket = rest.split("/", 1)[0]
        if f"{scheme}://" not in _OBJECT_STORE_SCHEMES or not BUCKET_NAME.match(bucket):
            raise ValueError(
                "expected a path, file://PATH, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or "
                "az://CONTAINER[/PREFIX]"
            )
        return value

    @property
    def keep_alive_secs(self) -> float:
        """`keep_alive_interval`, raised to Amp's floor of 30 seconds."""
        return float(max(self.keep_alive_interval, KEEP_ALIVE_FLOOR_SECS))

    @property
    def is_local_data_dir(self) -> bool:
        return not self.data_dir.startswith(_OBJECT_STORE_SCHEMES)


def split_addr(addr: str) -> tuple[str, int]:
    """`"127.0.0.1:1610"` -> `("127.0.0.1", 1610)`."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    solo: bool = False,
) -> Config:
    """Read the TOML file at `path` (if any), apply `AMP_CONFIG_*` overrides, validate.

    `base_dir` is where relative paths resolve when there is no file (solo's amp dir).
    In solo mode the listening addresses default to 127.0.0.1 instead of 0.0.0.0.
    Raises ConfigError naming the key, the value and what was expected.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    if path is not None:
        path = Path(path).resolve()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        base_dir = path.parent
    base_dir = (base_dir or Path.cwd()).resolve()
    origin = str(path) if path else "defaults"

    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        _set_from_env(data, keys, raw, name)
        sources[keys] = name

    if solo:
        for key in ("admin_api_addr", "flight_addr", "jsonl_addr"):
            if key not in data:
                data[key] = "127.0.0.1:" + Config.model_fields[key].default.rpartition(":")[2]

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources, origin)) from None

    paths = {
        key: _resolve_path(getattr(config, key), base_dir)
        for key in ("data_dir", "providers_dir", "manifests_dir")
    }
    return config.model_copy(update=paths)


def _resolve_path(value: str, base_dir: Path) -> str:
    if value.startswith(_OBJECT_STORE_SCHEMES):
        return value.rstrip("/")
    if value.startswith("file://"):
        value = value[len("file://") :]
    return str((base_dir / Path(value).expanduser()).resolve())


def _set_from_env(data: dict[str, Any], keys: tuple[str, ...], raw: str, env_name: str) -> None:
    """Place an env value at its key path, converted to the type the key expects."""
    node = data
    model: Any = Config
    for key in keys[:-1]:
        field = getattr(model, "model_fields", {}).get(key)
        model = field.annotation if field is not None else None
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    field = getattr(model, "model_fields", {}).get(keys[-1]) if model else None
    node[keys[-1]] = _convert_env_value(raw, field.annotation if field else str, env_name)


def _convert_env_value(raw: str, annotation: Any, env_name: str) -> Any:
    text = str(annotation)
    if annotation is bool or text == "bool | None":
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        return raw  # left for validation to reject with the key and value
    if annotation is int or text == "int | None":
        try:
            return int(raw.strip())
        except ValueError:
            return raw
    if annotation is float or text == "float | None":
        try:
            return float(raw.strip())
        except ValueError:
            return raw
    if text.startswith(("list", "dict")) or "list[" in text or "dict[" in text:
        try:
            return tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw


def _expected(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "no such key"
    if kind in ("int_type", "int_parsing"):
        return "expected an integer"
    if kind in ("float_type", "float_parsing"):
        return "expected a number"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind == "string_type":
        return "expected a string"
    if kind in ("dict_type", "model_type"):
        return "expected a table"
    if kind == "list_type":
        return "expected a list"
    if kind == "greater_than":
        return f"expected a value greater than {error['ctx']['gt']}"
    if kind == "greater_than_equal":
        return f"expected a value of at least {error['ctx']['ge']}"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _describe(exc: ValidationError, sources: Mapping[tuple[str, ...], str], origin: str) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        where = sources.get(loc, origin)
        value = error.get("input")
        shown = "(a table)" if isinstance(value, dict) else repr(value)
        what = "unknown config key" if error["type"] == "extra_forbidden" else "invalid config key"
        lines.append(f"{what} '{key}' = {shown} (from {where}): {_expected(error)}")
    return "; ".join(lines)
