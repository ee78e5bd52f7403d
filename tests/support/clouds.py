"""The three object-store endpoints under one face, for tests that run on each cloud."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from typing import Any

import pytest

from support.azurite import AzuriteEndpoint, azurite
from support.gcs import fake_gcs
from support.s3 import moto_s3

SCHEMES = ("s3", "az", "gs")


def endpoint(scheme: str) -> AbstractContextManager[Any]:
    """moto's S3 server, Azurite or fake-gcs-server; each has `.env` and makes buckets."""
    return {"s3": moto_s3, "az": azurite, "gs": fake_gcs}[scheme]()


def new_bucket(endpoint: Any, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    """A fresh bucket (a container on Azure); with `monkeypatch`, the endpoint's variables
    are set in this process too."""
    for name, value in endpoint.env.items() if monkeypatch else ():
        monkeypatch.setenv(name, value)
    name = f"b-{uuid.uuid4().hex[:12]}"  # valid on all three: 3-63 of [a-z0-9-]
    if isinstance(endpoint, AzuriteEndpoint):
        endpoint.create_container(name)
    else:
        endpoint.create_bucket(name)
    return name
