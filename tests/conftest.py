"""Shared fixtures. Helpers for real peers (PostgreSQL, anvil, fault proxy) live in tests/support."""
