"""Throwaway PostgreSQL for tests, started with ampd's own managed-PostgreSQL code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from ampd.metadb.managed import ManagedPostgres


@contextmanager
def running_cluster(folder: Path) -> Iterator[ManagedPostgres]:
    """A cluster in `folder`, stopped when the block ends."""
    cluster = ManagedPostgres(folder)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def create_database(cluster: ManagedPostgres) -> str:
    """A new empty database in the cluster; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql:///{name}?host={cluster.socket_dir}"


def drop_database(cluster: ManagedPostgres, url: str) -> None:
    name = url.split("///", 1)[1].split("?", 1)[0]
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
