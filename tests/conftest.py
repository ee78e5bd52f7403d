"""Shared fixtures. Helpers for real peers (PostgreSQL, anvil, fault proxy) live in tests/support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ampd.metadb.managed import ManagedPostgres
from support.postgres import create_database, drop_database, running_cluster


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedPostgres]:
    """One real PostgreSQL cluster for the whole test session."""
    with running_cluster(tmp_path_factory.mktemp("pg") / "metadb") as cluster:
        yield cluster


@pytest.fixture
def db_url(pg_cluster: ManagedPostgres) -> Iterator[str]:
    """A fresh, empty database for one test."""
    url = create_database(pg_cluster)
    yield url
    drop_database(pg_cluster, url)
