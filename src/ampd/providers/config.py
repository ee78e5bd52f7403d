"""Provider files: one TOML file per provider in `providers_dir`, named by its file stem.

A file is parsed and checked once, here, into a frozen `ProviderConfig`. `${VAR}`
placeholders in string values are kept as written until the provider is used
(`ProviderConfig.resolved`), so listing providers never needs their secrets.

Two kinds are known: `evm-rpc` (an Ethereum JSON-RPC node) and `firehose` (a StreamingFast
Firehose gRPC endpoint: `url`, optional `token`). A file of another kind is refused when it
is given on its own, and skipped with a warning naming it when a whole folder is listed:
another program's providers may share the folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from obstore.exceptions import BaseError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ampd.logs import get_logger
from ampd.storage.cloud import describe_error
from ampd.storage.folder import Folder, FolderUnreadable, open_folder

__all__ = [
    "EVM_RPC_KIND",
    "FIREHOSE_KIND",
    "KINDS",
    "ProviderConfig",
    "ProviderConfigError",
    "load_provider",
    "load_provider_file",
    "load_providers",
    "parse_provider",
    "select_providers",
    "strip_userinfo",
    "UnknownProviderKind",
]

EVM_RPC_KIND = "evm-rpc"
FIREHOSE_KIND = "firehose"
KINDS = (EVM_RPC_KIND, FIREHOSE_KIND)

log = get_logger("providers")

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Visible ASCII, space and tab: what a header value may contain.
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e\t]+\Z")
_URL_SCHEMES = {
    EVM_RPC_KIND: ("http", "https", "ws", "wss", "ipc"),
    FIREHOSE_KIND: ("http", "https"),  # gRPC: TLS for https, plaintext for http
}
_SECRET_KEYS = frozenset({"auth_token", "token"})


class ProviderConfigError(ValueError):
    """A provider file or value is invalid, or a provider cannot be used as configured."""


class UnknownProviderKind(ProviderConfigError):
    """A provider of a kind ampd does not know: skipped when a folder is listed."""


class _ProviderFile(BaseModel):
    """The keys a provider file may hold, with their types and bounds."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    kind: Literal["evm-rpc"]
    network: str = Field(min_length=1)
    url: str = Field(min_length=1)
    auth_token: str | None = None
    auth_header: str | None = None
    concurrent_request_limit: int = Field(1024, ge=1)
    rpc_batch_size: int = Field(0, ge=0)
    rate_limit_per_minute: int | None = Field(None, ge=1)
    fetch_receipts_per_tx: bool = False
    timeout_secs: float = Field(30.0, gt=0)


class _FirehoseFile(BaseModel):
    """The keys of a Firehose provider file (Amp's FirehoseProviderConfig)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["firehose"]
    network: str = Field(min_length=1)
    url: str = Field(min_length=1)
    token: str | None = None


_MODELS: dict[str, type[BaseModel]] = {EVM_RPC_KIND: _ProviderFile, FIREHOSE_KIND: _FirehoseFile}

_EXPECTED = {
    "kind": " or ".join(f'"{k}"' for k in KINDS),
    "network": "a non-empty string",
    "url": "a URL string: http(s)://host, ws(s)://host or ipc:///absolute/path",
    "token": "a string",
    "auth_token": "a string",
    "auth_header": "a string",
    "concurrent_request_limit": "an integer >= 1",
    "rpc_batch_size": "an integer >= 0",
    "rate_limit_per_minute": "an integer >= 1",
    "fetch_receipts_per_tx": "true or false",
    "timeout_secs": "a number of seconds > 0",
}


@dataclass(frozen=True)
class ProviderConfig:
    """One provider, checked. Build it with `load_provider_file` or `parse_provider`.

    Until `resolved()` is called, string values may still hold `${VAR}` placeholders.
    """

    name: str
    kind: str
    network: str
    url: str
    auth_token: str | None = field(default=None, repr=False)
    auth_header: str | None = None
    concurrent_request_limit: int = 1024
    rpc_batch_size: int = 0
    rate_limit_per_minute: int | None = None
    fetch_receipts_per_tx: bool = False
    timeout_secs: float = 30.0
    token: str | None = field(default=None, repr=False)  # firehose: the bearer token
    source: str | None = field(default=None, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.raw:  # built in code rather than read from a file: the fields are the file
            written = {
                f.name: getattr(self, f.name)
                for f in fields(self)
                if f.name in _EXPECTED and getattr(self, f.name) != f.default
            }
            written["kind"] = self.kind
            object.__setattr__(self, "raw", MappingProxyType(written))

    @property
    def is_resolved(self) -> bool:
        """True when no string value still holds a `${VAR}` placeholder."""
        return not any(
            isinstance(v, str) and _PLACEHOLDER_RE.search(v)
            for v in (self.network, self.url, self.auth_token, self.auth_header, self.token)
        )

    @property
    def display_url(self) -> str:
        """The URL as written in the file (placeholders kept, credentials removed): safe to log."""
        return strip_userinfo(str(self.raw.get("url", self.url)))

    def resolved(self, env: Mapping[str, str] | None = None) -> ProviderConfig:
        """Return a copy with every `${VAR}` replaced from `env` (default: `os.environ`).

        Raises ProviderConfigError naming the variable, the provider and the key when a
        variable is not set, or when a substituted value is invalid.
        """
        if self.is_resolved:
            return self
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for key, value in self.raw.items():
            values[key] = _substitute(value, env, self, key) if isinstance(value, str) else value
        checked = _check(values, self._where(), substituted_from=self.raw)
        return replace(self, **checked)

    def shared_among(self, processes: int) -> dict[str, Any]:
        """The file as written, with the request limits its kind has divided among
        `processes` that each use the provider (together they stay within the limits)."""
        raw = dict(self.raw)
        if "concurrent_request_limit" in _MODELS[self.kind].model_fields:
            raw["concurrent_request_limit"] = max(1, self.concurrent_request_limit // processes)
            if self.rate_limit_per_minute:
                raw["rate_limit_per_minute"] = max(1, self.rate_limit_per_minute // processes)
        return raw

    def to_public_dict(self) -> dict[str, Any]:
        """The provider as written (name first, `${VAR}` placeholders kept), for the Admin API."""
        return {"name": self.name, **self.raw}

    def to_toml(self) -> str:
        """The provider's file content, as written (placeholders kept)."""
        return "".join(f"{key} = {_toml_value(value)}\n" for key, value in self.raw.items())

    def _where(self) -> str:
        if self.source:
            return f"provider '{self.name}' ({self.source})"
        return f"provider '{self.name}'"


def parse_provider(
    name: str, data: Mapping[str, Any], *, source: str | None = None
) -> ProviderConfig:
    """Check a provider's keys (as read from TOML or a request body) into a ProviderConfig.

    Raises ProviderConfigError naming the provider, the key, the value and what was expected.
    """
    where = f"provider '{name}' ({source})" if source else f"provider '{name}'"
    if not _NAME_RE.match(name):
        raise ProviderConfigError(
            f"{where}: name '{name}' is invalid: expected [a-z_][a-z0-9_]* "
            "(lower-case letters, digits and underscores, not starting with a digit)"
        )
    raw = dict(data)
    for key, value in raw.items():
        if isinstance(value, str):
            _check_placeholders(value, where, key)
    checked = _check(raw, where, substituted_from=None)
    return ProviderConfig(name=name, **checked, source=source, raw=MappingProxyType(raw))


def load_provider_file(path: str | os.PathLike[str]) -> ProviderConfig:
    """Read and check one local provider file; its name is the file stem.

    Raises ProviderConfigError for unreadable or invalid TOML and for invalid keys or values.
    """
    path = Path(path)
    return load_provider(open_folder(path.parent), path.name)


def load_provider(folder: Folder, file_name: str) -> ProviderConfig:
    """Read and check `file_name` in a providers folder (local or in an object store).

    Raises FileNotFoundError when there is no such file; ProviderConfigError for an
    unreadable or invalid file.
    """
    where = folder.where(file_name)
    try:
        data = tomllib.loads(folder.read(file_name).decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, BaseError) as e:
        reason = getattr(e, "strerror", None) or describe_error(e)
        raise ProviderConfigError(f"provider file {where}: cannot read: {reason}") from e
    except UnicodeDecodeError as e:
        raise ProviderConfigError(f"provider file {where}: not UTF-8: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ProviderConfigError(f"provider file {where}: invalid TOML: {e}") from e
    return parse_provider(file_name.removesuffix(".toml"), data, source=where)


def load_providers(directory: str | os.PathLike[str] | Folder) -> list[ProviderConfig]:
    """Every `*.toml` provider file in `directory` (a path, an object-store URL or a Folder),
    sorted by name; a missing directory is empty. Blocking: run it in a thread on a loop.

    Raises ProviderConfigError for the first invalid file, or when the folder cannot be listed.
    """
    folder = directory if isinstance(directory, Folder) else open_folder(directory)
    try:
        names = folder.names(".toml")
    except FolderUnreadable as e:
        raise ProviderConfigError(f"providers_dir {e}") from None
    providers = []
    for name in names:
        try:
            providers.append(load_provider(folder, name))
        except FileNotFoundError:  # deleted since the listing
            continue
        except UnknownProviderKind as exc:
            log.warning("skipping %s", exc)
    return sorted(providers, key=lambda p: p.name)


def select_providers(
    providers: Iterable[ProviderConfig], kind: str, network: str
) -> list[ProviderConfig]:
    """The providers whose kind and network match, in the order given.

    Raises ProviderConfigError naming the kind and network when none match.
    """
    providers = list(providers)
    matching = [p for p in providers if p.kind == kind and p.network == network]
    if not matching:
        known = ", ".join(f"{p.name} ({p.kind}, {p.network})" for p in providers) or "none"
        raise ProviderConfigError(
            f"no provider for kind '{kind}' and network '{network}'; providers available: {known}"
        )
    return matching


def _check(
    values: Mapping[str, Any], where: str, substituted_from: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Validate the keys with pydantic, then the string formats; return the typed values.

    Before substitution (`substituted_from` is None) values holding placeholders are only
    type-checked; their format is checked once they are substituted.
    """
    problems: list[str] = []
    kind = values.get("kind")
    model_type = _MODELS.get(kind) if isinstance(kind, str) else None
    if model_type is None:
        if "kind" not in values:
            raise ProviderConfigError(
                f"{where}: missing required key 'kind' (expected {_EXPECTED['kind']})"
            )
        raise UnknownProviderKind(
            f"{where}: key 'kind' = {_show('kind', kind, None)}: not a kind ampd knows "
            f"(expected {_EXPECTED['kind']})"
        )
    try:
        model = model_type.model_validate(dict(values))
    except ValidationError as e:
        problems = [_describe(err, substituted_from, model_type) for err in e.errors()]
        raise ProviderConfigError(f"{where}: " + "; ".join(problems)) from None
    checked = model.model_dump()
    if "timeout_secs" in checked:
        checked["timeout_secs"] = float(checked["timeout_secs"])
    for key, check in (
        ("url", lambda url: _url_problem(url, _URL_SCHEMES[kind])),
        ("auth_header", _header_name_problem),
        ("auth_token", _header_value_problem),
        ("token", _header_value_problem),
    ):
        value = checked.get(key)
        if value is None or (substituted_from is None and _PLACEHOLDER_RE.search(value)):
            continue
        problem = check(value)
        if problem:
            shown = _show(key, values[key], substituted_from)
            problems.append(f"key '{key}' = {shown}: {problem}")
    if problems:
        raise ProviderConfigError(f"{where}: " + "; ".join(problems))
    return checked


def _describe(
    err: Mapping[str, Any], substituted_from: Mapping[str, Any] | None, model: type[BaseModel]
) -> str:
    key = str(err["loc"][0]) if err["loc"] else "?"
    if err["type"] == "missing":
        return f"missing required key '{key}' (expected {_EXPECTED.get(key, 'a value')})"
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return f"unknown key '{key}' = {_show(key, err['input'], None)} (known keys: {known})"
    shown = _show(key, err["input"], substituted_from)
    return f"key '{key}' = {shown}: expected {_EXPECTED.get(key, 'a valid value')}"


def _show(key: str, value: Any, substituted_from: Mapping[str, Any] | None) -> str:
    """A value as it may appear in an error: secrets hidden, env-derived values by placeholder."""
    if key in _SECRET_KEYS and value is not None:
        return "<redacted>"
    if substituted_from is not None and substituted_from.get(key) != value:
        return f"{_toml_value(substituted_from[key])} (after substitution)"
    return _toml_value(value)


def _url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"not a valid URL ({e})"
    if parts.scheme not in schemes:
        starts = [f"{s}:///" if s == "ipc" else f"{s}://" for s in schemes]
        return f"expected a URL starting with {', '.join(starts[:-1])} or {starts[-1]}"
    if parts.scheme == "ipc":
        if parts.netloc or not parts.path.startswith("/"):
            return "expected ipc:///absolute/path/to/socket"
        return None
    try:
        parts.port  # noqa: B018 - raises on an out-of-range or non-numeric port
    except ValueError:
        return "the port is not a number between 0 and 65535"
    if not parts.hostname:
        return f"expected a host after {parts.scheme}://"
    return None


def _header_name_problem(name: str) -> str | None:
    if _HEADER_NAME_RE.match(name):
        return None
    return "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~, no spaces)"


def _header_value_problem(value: str) -> str | None:
    if _HEADER_VALUE_RE.match(value):
        return None
    return "expected a non-empty token of printable ASCII characters"


def _check_placeholders(value: str, where: str, key: str) -> None:
    """Reject `${` without a closing brace and placeholders that are not variable names."""
    rest = _PLACEHOLDER_RE.sub("", value)
    if "${" in rest:
        raise ProviderConfigError(
            f"{where}: key '{key}' = {_show(key, value, None)}: unclosed '${{' "
            "(expected ${VARIABLE_NAME})"
        )
    for match in _PLACEHOLDER_RE.finditer(value):
        if not _VAR_NAME_RE.match(match.group(1)):
            raise ProviderConfigError(
                f"{where}: key '{key}': '{match.group(0)}' is not a valid placeholder "
                "(expected ${VARIABLE_NAME}: letters, digits and underscores)"
            )


def _substitute(value: str, env: Mapping[str, str], provider: ProviderConfig, key: str) -> str:
    def lookup(match: re.Match[str]) -> str:
        var = match.group(1)
        try:
            return env[var]
        except KeyError:
            raise ProviderConfigError(
                f"{provider._where()}: key '{key}' uses environment variable '{var}', "
                "which is not set"
            ) from None

    return _PLACEHOLDER_RE.sub(lookup, value)


def strip_userinfo(url: str) -> str:
    """`url` without `user:password@` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=host).geturl()


def _toml_value(value: Any) -> str:
    """A scalar as TOML (also used to quote values in error messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; DEL must be escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)
