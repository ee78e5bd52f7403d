"""Providers: where blockchain data comes from, configured by one TOML file each."""

from ampd.providers.config import (
    ProviderConfig,
    ProviderConfigError,
    load_provider_file,
    load_providers,
    parse_provider,
    select_providers,
)

__all__ = [
    "ProviderConfig",
    "ProviderConfigError",
    "load_provider_file",
    "load_providers",
    "parse_provider",
    "select_providers",
]
