"""Fixtures shared by the unit tests: JSON-RPC blocks and receipts captured from anvil."""

import json
from pathlib import Path

import pytest

EVM_DATA = Path(__file__).parents[1] / "data" / "evm"


@pytest.fixture(scope="module")
def pairs():
    """Three blocks as (eth_getBlockByNumber, eth_getBlockReceipts) results: types 0 to 4."""
    return json.loads((EVM_DATA / "anvil_blocks.json").read_text())


@pytest.fixture(scope="module")
def variants():
    """Rare forms, by name: each a block with its receipts."""
    return json.loads((EVM_DATA / "variants.json").read_text())
