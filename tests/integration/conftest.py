"""Fixtures shared by the integration tests that put a fault proxy in front of anvil."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.anvil import Anvil
from support.chain import ChainInfo
from support.faultproxy import FaultProxy


@pytest.fixture
def proxy(node: tuple[Anvil, ChainInfo]) -> Iterator[FaultProxy]:
    """A fault proxy in front of the module's `node` (each module builds its own chain)."""
    with FaultProxy(node[0].url) as p:
        yield p
