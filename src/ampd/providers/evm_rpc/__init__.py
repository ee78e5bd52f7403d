"""The evm-rpc provider: a JSON-RPC client for EVM nodes (HTTP, WebSocket, IPC)."""

from ampd.providers.evm_rpc.blocks import RawBlock
from ampd.providers.evm_rpc.client import EvmRpcClient
from ampd.providers.evm_rpc.errors import (
    BlockNotFoundError,
    ProviderRejectedError,
    RetriesExhaustedError,
    RpcError,
)
from ampd.providers.evm_rpc.pool import ProviderPool

__all__ = [
    "BlockNotFoundError",
    "EvmRpcClient",
    "ProviderPool",
    "ProviderRejectedError",
    "RawBlock",
    "RetriesExhaustedError",
    "RpcError",
]
