"""Which connection failures start-up waits out, and how the URL is shown."""

from __future__ import annotations

import psycopg
import pytest

from ampd.metadb.connect import is_transient, redact_url


@pytest.mark.parametrize(
    "message",
    [
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused\n\tIs the server running on that host?",
        'connection is bad: connection to server on socket "/x/.s.PGSQL.5432" failed: '
        "No such file or directory",
        'connection failed: connection to server on socket "/x/.s.PGSQL.5432" failed: '
        "FATAL:  the database system is starting up",
        "connection failed: FATAL:  the database system is not yet accepting connections",
        "connection failed: FATAL:  the database system is shutting down",
        "failed to resolve host 'db': [Errno -2] Name or service not known",
    ],
)
def test_transient_failures_are_waited_out(message: str) -> None:
    assert is_transient(psycopg.OperationalError(message))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError('connection failed: FATAL:  database "amp" does not exist'),
        psycopg.OperationalError(
            'connection failed: FATAL:  password authentication failed for user "ampd"'
        ),
        psycopg.OperationalError('connection failed: FATAL:  role "nobody" does not exist'),
        psycopg.ProgrammingError('invalid URI query parameter: "bogus"'),
    ],
)
def test_configuration_errors_fail_at_once(error: Exception) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ampd:s3cret@db:5432/amp", "postgresql://ampd@db:5432/amp"),
        (
            "postgres://ampd@db/amp?password=s3cret&sslmode=require",
            "postgres://ampd@db/amp?sslmode=require",
        ),
        ("postgresql:///postgres?host=/run/pg", "postgresql:///postgres?host=/run/pg"),
        ("postgresql://db/amp", "postgresql://db/amp"),
    ],
)
def test_redact_url_drops_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
