"""Provider files: parsing, errors, `${VAR}` substitution and selection."""

import tomllib
from pathlib import Path

import pytest

from ampd.providers.config import (
    ProviderConfig,
    ProviderConfigError,
    load_provider_file,
    load_providers,
    parse_provider,
    select_providers,
)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


MINIMAL = 'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "http://127.0.0.1:8545"\n'


def test_minimal_file_gets_defaults(tmp_path):
    p = load_provider_file(write(tmp_path, "local", MINIMAL))
    assert p.name == "local"
    assert (p.kind, p.network, p.url) == ("evm-rpc", "anvil", "http://127.0.0.1:8545")
    assert p.auth_token is None and p.auth_header is None
    assert p.concurrent_request_limit == 1024
    assert p.rpc_batch_size == 0
    assert p.rate_limit_per_minute is None
    assert p.fetch_receipts_per_tx is False
    assert p.timeout_secs == 30.0
    assert p.source == str(tmp_path / "local.toml")
    assert p.is_resolved


def test_all_keys(tmp_path):
    text = MINIMAL + (
        'auth_token = "abc"\nauth_header = "X-Api-Key"\nconcurrent_request_limit = 8\n'
        "rpc_batch_size = 50\nrate_limit_per_minute = 600\nfetch_receipts_per_tx = true\n"
        "timeout_secs = 2.5\n"
    )
    p = load_provider_file(write(tmp_path, "full", text))
    assert p.auth_token == "abc" and p.auth_header == "X-Api-Key"
    assert p.concurrent_request_limit == 8
    assert p.rpc_batch_size == 50
    assert p.rate_limit_per_minute == 600
    assert p.fetch_receipts_per_tx is True
    assert p.timeout_secs == 2.5
    assert "abc" not in repr(p)


@pytest.mark.parametrize(
    "url",
    ["http://h", "https://h:8545/v2/key", "ws://127.0.0.1:8545", "wss://h/x", "ipc:///tmp/a.ipc"],
)
def test_accepted_urls(url):
    assert parse_provider("p", {"kind": "evm-rpc", "network": "n", "url": url}).url == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://h", "http://, https://, ws://, wss:// or ipc:///"),
        ("127.0.0.1:8545", "http://, https://, ws://, wss:// or ipc:///"),
        ("http://", "expected a host"),
        ("ipc://relative/path", "ipc:///absolute/path"),
        ("http://h:99999", "port"),
    ],
)
def test_rejected_urls(tmp_path, url, expected):
    path = write(tmp_path, "bad", f'kind = "evm-rpc"\nnetwork = "n"\nurl = "{url}"\n')
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    message = str(e.value)
    assert str(path) in message and "'url'" in message and url in message
    assert expected in message


@pytest.mark.parametrize(
    ("line", "key", "shown", "expected"),
    [
        ("concurrent_request_limit = 0", "concurrent_request_limit", "0", "integer >= 1"),
        ('concurrent_request_limit = "8"', "concurrent_request_limit", '"8"', "integer >= 1"),
        ("rpc_batch_size = -1", "rpc_batch_size", "-1", "integer >= 0"),
        ("rate_limit_per_minute = 0", "rate_limit_per_minute", "0", "integer >= 1"),
        ('fetch_receipts_per_tx = "yes"', "fetch_receipts_per_tx", '"yes"', "true or false"),
        ("fetch_receipts_per_tx = 1", "fetch_receipts_per_tx", "1", "true or false"),
        ("timeout_secs = 0", "timeout_secs", "0", "seconds > 0"),
        ("timeout_secs = true", "timeout_secs", "true", "seconds > 0"),
        ("timeout_secs = inf", "timeout_secs", "inf", "seconds > 0"),
        ('auth_header = "Bad Header"', "auth_header", '"Bad Header"', "header name"),
    ],
)
def test_bad_values_name_file_key_value_and_expectation(tmp_path, line, key, shown, expected):
    path = write(tmp_path, "bad", MINIMAL + line + "\n")
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    message = str(e.value)
    assert str(path) in message
    assert f"key '{key}' = {shown}" in message
    assert expected in message


def test_unknown_kind_is_refused_alone_and_skipped_in_a_folder(tmp_path, caplog):
    path = write(tmp_path, "sol", 'kind = "solana"\nnetwork = "n"\nurl = "http://h"\n')
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    assert "key 'kind' = \"solana\": not a kind ampd knows" in str(e.value)
    assert '"evm-rpc" or "firehose"' in str(e.value)
    write(tmp_path, "local", MINIMAL)
    with caplog.at_level("WARNING"):
        assert [p.name for p in load_providers(tmp_path)] == ["local"]
    assert str(path) in caplog.text


def test_missing_kind(tmp_path):
    path = write(tmp_path, "nokind", 'network = "n"\nurl = "http://h"\n')
    with pytest.raises(ProviderConfigError, match="missing required key 'kind'"):
        load_provider_file(path)


def test_firehose_provider(tmp_path, monkeypatch):
    text = 'kind = "firehose"\nnetwork = "mainnet"\nurl = "${FH_URL}"\ntoken = "${FH_TOKEN}"\n'
    p = load_provider_file(write(tmp_path, "fh", text))
    assert (p.kind, p.network, p.url, p.token) == (
        "firehose",
        "mainnet",
        "${FH_URL}",
        "${FH_TOKEN}",
    )
    assert not p.is_resolved
    assert "FH_TOKEN" not in repr(p) and "token" not in repr(p)
    monkeypatch.setenv("FH_URL", "https://firehose.example:443")
    monkeypatch.setenv("FH_TOKEN", "s3cret")
    r = p.resolved()
    assert (r.url, r.token) == ("https://firehose.example:443", "s3cret")
    assert p.to_toml() == text
    assert select_providers([r], "firehose", "mainnet") == [r]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('url = "ws://h:1"', "expected a URL starting with http:// or https://"),
        (
            'url = "http://h"\ntimeout_secs = 3',
            "unknown key 'timeout_secs' = 3 (known keys: kind, network, url, token)",
        ),
        ('url = "http://h"\ntoken = 5', "key 'token' = <redacted>: expected a string"),
        ('url = "http://h"\ntoken = "two\\nlines"', "key 'token' = <redacted>"),
    ],
)
def test_firehose_provider_errors(tmp_path, line, message):
    path = write(tmp_path, "fh", f'kind = "firehose"\nnetwork = "n"\n{line}\n')
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_missing_required_keys_are_all_named(tmp_path):
    path = write(tmp_path, "empty", 'kind = "evm-rpc"\n')
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    assert "missing required key 'network'" in str(e.value)
    assert "missing required key 'url'" in str(e.value)


def test_empty_network(tmp_path):
    path = write(tmp_path, "p", 'kind = "evm-rpc"\nnetwork = ""\nurl = "http://h"\n')
    with pytest.raises(ProviderConfigError, match="key 'network' = \"\": expected a non-empty"):
        load_provider_file(path)


def test_unknown_key(tmp_path):
    path = write(tmp_path, "p", MINIMAL + "batch_size = 10\n")
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    assert "unknown key 'batch_size' = 10" in str(e.value)
    assert "rpc_batch_size" in str(e.value)  # the known keys are listed


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "p", "kind = \n")
    with pytest.raises(ProviderConfigError, match="invalid TOML"):
        load_provider_file(path)


def test_invalid_name(tmp_path):
    path = write(tmp_path, "Main-Net", MINIMAL)
    with pytest.raises(ProviderConfigError, match=r"name 'Main-Net' is invalid"):
        load_provider_file(path)


def test_token_value_never_in_errors(tmp_path):
    path = write(tmp_path, "p", MINIMAL + 'auth_token = "sec\\u0001ret"\n')
    with pytest.raises(ProviderConfigError) as e:
        load_provider_file(path)
    assert "auth_token" in str(e.value) and "<redacted>" in str(e.value)
    assert "sec" not in str(e.value)


def test_load_providers_sorted_and_missing_dir(tmp_path):
    assert load_providers(tmp_path / "nope") == []
    write(tmp_path, "zeta", MINIMAL)
    write(tmp_path, "alpha", MINIMAL)
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in load_providers(tmp_path)] == ["alpha", "zeta"]


def test_load_providers_reports_bad_file(tmp_path):
    write(tmp_path, "good", MINIMAL)
    bad = write(tmp_path, "bad", MINIMAL + "rpc_batch_size = 1.5\n")
    with pytest.raises(ProviderConfigError, match=str(bad)):
        load_providers(tmp_path)


# --- ${VAR} substitution ---

SECRET = (
    'kind = "evm-rpc"\nnetwork = "mainnet"\nurl = "${RPC_URL}"\n'
    'auth_token = "${RPC_TOKEN}"\nauth_header = "X-${HEADER_SUFFIX}"\n'
)


def test_placeholders_kept_when_listed_and_resolved_when_used(tmp_path):
    p = load_provider_file(write(tmp_path, "main", SECRET))
    assert p.url == "${RPC_URL}" and not p.is_resolved
    env = {"RPC_URL": "https://rpc.example/v2/k", "RPC_TOKEN": "t0k", "HEADER_SUFFIX": "Key"}
    r = p.resolved(env)
    assert r.is_resolved
    assert (r.url, r.auth_token, r.auth_header) == ("https://rpc.example/v2/k", "t0k", "X-Key")
    assert r.resolved(env) is r
    # The public form keeps what the file says.
    assert r.to_public_dict() == {
        "name": "main",
        "kind": "evm-rpc",
        "network": "mainnet",
        "url": "${RPC_URL}",
        "auth_token": "${RPC_TOKEN}",
        "auth_header": "X-${HEADER_SUFFIX}",
    }
    assert r.display_url == "${RPC_URL}"


def test_resolved_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RPC_URL", "ws://127.0.0.1:1")
    monkeypatch.setenv("RPC_TOKEN", "x")
    monkeypatch.setenv("HEADER_SUFFIX", "Y")
    p = load_provider_file(write(tmp_path, "main", SECRET)).resolved()
    assert p.url == "ws://127.0.0.1:1"


def test_missing_variable_names_variable_provider_and_key(tmp_path):
    p = load_provider_file(write(tmp_path, "main", SECRET))
    with pytest.raises(ProviderConfigError) as e:
        p.resolved({"RPC_URL": "http://h", "HEADER_SUFFIX": "K"})
    message = str(e.value)
    assert "'RPC_TOKEN'" in message and "provider 'main'" in message and "'auth_token'" in message
    assert "not set" in message


def test_substituted_value_is_checked_without_showing_it(tmp_path):
    p = load_provider_file(write(tmp_path, "main", SECRET))
    with pytest.raises(ProviderConfigError) as e:
        p.resolved({"RPC_URL": "gopher://secret-host", "RPC_TOKEN": "t", "HEADER_SUFFIX": "K"})
    assert '"${RPC_URL}" (after substitution)' in str(e.value)
    assert "secret-host" not in str(e.value)


@pytest.mark.parametrize("value", ["${UNCLOSED", "${}", "${1BAD}", "${A-B}"])
def test_bad_placeholder_syntax(value):
    with pytest.raises(ProviderConfigError, match="'url'"):
        parse_provider("p", {"kind": "evm-rpc", "network": "n", "url": value})


def test_display_url_hides_credentials():
    p = parse_provider("p", {"kind": "evm-rpc", "network": "n", "url": "https://u:pw@h:1/x"})
    assert p.display_url == "https://h:1/x"


def test_to_toml_round_trips(tmp_path):
    text = SECRET + "timeout_secs = 1.5\nrpc_batch_size = 10\nfetch_receipts_per_tx = true\n"
    p = load_provider_file(write(tmp_path, "main", text))
    assert tomllib.loads(p.to_toml()) == tomllib.loads(text)
    tricky = parse_provider("t", {"kind": "evm-rpc", "network": 'a"b\\c\n\x7fé', "url": "http://h"})
    assert tomllib.loads(tricky.to_toml())["network"] == 'a"b\\c\n\x7fé'


def test_built_in_code_has_public_form():
    p = ProviderConfig(name="p", kind="evm-rpc", network="anvil", url="http://h", rpc_batch_size=5)
    assert p.to_public_dict() == {
        "name": "p",
        "kind": "evm-rpc",
        "network": "anvil",
        "url": "http://h",
        "rpc_batch_size": 5,
    }
    assert p.resolved({}) is p


# --- selection ---


def make(name: str, network: str, kind: str = "evm-rpc") -> ProviderConfig:
    return ProviderConfig(name=name, kind=kind, network=network, url="http://h")


def test_select_by_kind_and_network():
    providers = [make("a", "mainnet"), make("b", "anvil"), make("c", "mainnet")]
    assert [p.name for p in select_providers(providers, "evm-rpc", "mainnet")] == ["a", "c"]


def test_select_none_names_kind_and_network():
    with pytest.raises(ProviderConfigError) as e:
        select_providers([make("a", "mainnet")], "evm-rpc", "base")
    assert "kind 'evm-rpc'" in str(e.value) and "network 'base'" in str(e.value)
    assert "a (evm-rpc, mainnet)" in str(e.value)
