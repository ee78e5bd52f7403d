import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransactionTraceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[TransactionTraceStatus]
    SUCCEEDED: _ClassVar[TransactionTraceStatus]
    FAILED: _ClassVar[TransactionTraceStatus]
    REVERTED: _ClassVar[TransactionTraceStatus]

class CallType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSPECIFIED: _ClassVar[CallType]
    CALL: _ClassVar[CallType]
    CALLCODE: _ClassVar[CallType]
    DELEGATE: _ClassVar[CallType]
    STATIC: _ClassVar[CallType]
    CREATE: _ClassVar[CallType]
UNKNOWN: TransactionTraceStatus
SUCCEEDED: TransactionTraceStatus
FAILED: TransactionTraceStatus
REVERTED: TransactionTraceStatus
UNSPECIFIED: CallType
CALL: CallType
CALLCODE: CallType
DELEGATE: CallType
STATIC: CallType
CREATE: CallType

class Block(_message.Message):
    __slots__ = ("hash", "number", "size", "header", "uncles", "transaction_traces", "balance_changes", "detail_level", "code_changes", "system_calls", "ver")
    class DetailLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DETAILLEVEL_EXTENDED: _ClassVar[Block.DetailLevel]
        DETAILLEVEL_BASE: _ClassVar[Block.DetailLevel]
    DETAILLEVEL_EXTENDED: Block.DetailLevel
    DETAILLEVEL_BASE: Block.DetailLevel
    HASH_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    UNCLES_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_TRACES_FIELD_NUMBER: _ClassVar[int]
    BALANCE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CODE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_CALLS_FIELD_NUMBER: _ClassVar[int]
    VER_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    number: int
    size: int
    header: BlockHeader
    uncles: _containers.RepeatedCompositeFieldContainer[BlockHeader]
    transaction_traces: _containers.RepeatedCompositeFieldContainer[TransactionTrace]
    balance_changes: _containers.RepeatedCompositeFieldContainer[BalanceChange]
    detail_level: Block.DetailLevel
    code_changes: _containers.RepeatedCompositeFieldContainer[CodeChange]
    system_calls: _containers.RepeatedCompositeFieldContainer[Call]
    ver: int
    def __init__(self, hash: _Optional[bytes] = ..., number: _Optional[int] = ..., size: _Optional[int] = ..., header: _Optional[_Union[BlockHeader, _Mapping]] = ..., uncles: _Optional[_Iterable[_Union[BlockHeader, _Mapping]]] = ..., transaction_traces: _Optional[_Iterable[_Union[TransactionTrace, _Mapping]]] = ..., balance_changes: _Optional[_Iterable[_Union[BalanceChange, _Mapping]]] = ..., detail_level: _Optional[_Union[Block.DetailLevel, str]] = ..., code_changes: _Optional[_Iterable[_Union[CodeChange, _Mapping]]] = ..., system_calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., ver: _Optional[int] = ...) -> None: ...

class BlockHeader(_message.Message):
    __slots__ = ("parent_hash", "uncle_hash", "coinbase", "state_root", "transactions_root", "receipt_root", "logs_bloom", "difficulty", "total_difficulty", "number", "gas_limit", "gas_used", "timestamp", "extra_data", "mix_hash", "nonce", "hash", "base_fee_per_gas", "withdrawals_root", "tx_dependency", "blob_gas_used", "excess_blob_gas", "parent_beacon_root")
    PARENT_HASH_FIELD_NUMBER: _ClassVar[int]
    UNCLE_HASH_FIELD_NUMBER: _ClassVar[int]
    COINBASE_FIELD_NUMBER: _ClassVar[int]
    STATE_ROOT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_ROOT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_ROOT_FIELD_NUMBER: _ClassVar[int]
    LOGS_BLOOM_FIELD_NUMBER: _ClassVar[int]
    DIFFICULTY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DIFFICULTY_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    GAS_USED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXTRA_DATA_FIELD_NUMBER: _ClassVar[int]
    MIX_HASH_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    BASE_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWALS_ROOT_FIELD_NUMBER: _ClassVar[int]
    TX_DEPENDENCY_FIELD_NUMBER: _ClassVar[int]
    BLOB_GAS_USED_FIELD_NUMBER: _ClassVar[int]
    EXCESS_BLOB_GAS_FIELD_NUMBER: _ClassVar[int]
    PARENT_BEACON_ROOT_FIELD_NUMBER: _ClassVar[int]
    parent_hash: bytes
    uncle_hash: bytes
    coinbase: bytes
    state_root: bytes
    transactions_root: bytes
    receipt_root: bytes
    logs_bloom: bytes
    difficulty: BigInt
    total_difficulty: BigInt
    number: int
    gas_limit: int
    gas_used: int
    timestamp: _timestamp_pb2.Timestamp
    extra_data: bytes
    mix_hash: bytes
    nonce: int
    hash: bytes
    base_fee_per_gas: BigInt
    withdrawals_root: bytes
    tx_dependency: Uint64NestedArray
    blob_gas_used: int
    excess_blob_gas: int
    parent_beacon_root: bytes
    def __init__(self, parent_hash: _Optional[bytes] = ..., uncle_hash: _Optional[bytes] = ..., coinbase: _Optional[bytes] = ..., state_root: _Optional[bytes] = ..., transactions_root: _Optional[bytes] = ..., receipt_root: _Optional[bytes] = ..., logs_bloom: _Optional[bytes] = ..., difficulty: _Optional[_Union[BigInt, _Mapping]] = ..., total_difficulty: _Optional[_Union[BigInt, _Mapping]] = ..., number: _Optional[int] = ..., gas_limit: _Optional[int] = ..., gas_used: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., extra_data: _Optional[bytes] = ..., mix_hash: _Optional[bytes] = ..., nonce: _Optional[int] = ..., hash: _Optional[bytes] = ..., base_fee_per_gas: _Optional[_Union[BigInt, _Mapping]] = ..., withdrawals_root: _Optional[bytes] = ..., tx_dependency: _Optional[_Union[Uint64NestedArray, _Mapping]] = ..., blob_gas_used: _Optional[int] = ..., excess_blob_gas: _Optional[int] = ..., parent_beacon_root: _Optional[bytes] = ...) -> None: ...

class Uint64NestedArray(_message.Message):
    __slots__ = ("val",)
    VAL_FIELD_NUMBER: _ClassVar[int]
    val: _containers.RepeatedCompositeFieldContainer[Uint64Array]
    def __init__(self, val: _Optional[_Iterable[_Union[Uint64Array, _Mapping]]] = ...) -> None: ...

class Uint64Array(_message.Message):
    __slots__ = ("val",)
    VAL_FIELD_NUMBER: _ClassVar[int]
    val: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, val: _Optional[_Iterable[int]] = ...) -> None: ...

class BigInt(_message.Message):
    __slots__ = ("bytes",)
    BYTES_FIELD_NUMBER: _ClassVar[int]
    bytes: bytes
    def __init__(self, bytes: _Optional[bytes] = ...) -> None: ...

class TransactionTrace(_message.Message):
    __slots__ = ("to", "nonce", "gas_price", "gas_limit", "value", "input", "v", "r", "s", "gas_used", "type", "access_list", "max_fee_per_gas", "max_priority_fee_per_gas", "index", "hash", "return_data", "public_key", "begin_ordinal", "end_ordinal", "status", "receipt", "calls", "blob_gas", "blob_gas_fee_cap", "blob_hashes")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TRX_TYPE_LEGACY: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ACCESS_LIST: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_DYNAMIC_FEE: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_BLOB: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_DEPOSIT: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_UNSIGNED: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_CONTRACT: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_RETRY: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_SUBMIT_RETRYABLE: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_INTERNAL: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_ARBITRUM_LEGACY: _ClassVar[TransactionTrace.Type]
        TRX_TYPE_OPTIMISM_DEPOSIT: _ClassVar[TransactionTrace.Type]
    TRX_TYPE_LEGACY: TransactionTrace.Type
    TRX_TYPE_ACCESS_LIST: TransactionTrace.Type
    TRX_TYPE_DYNAMIC_FEE: TransactionTrace.Type
    TRX_TYPE_BLOB: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_DEPOSIT: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_UNSIGNED: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_CONTRACT: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_RETRY: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_SUBMIT_RETRYABLE: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_INTERNAL: TransactionTrace.Type
    TRX_TYPE_ARBITRUM_LEGACY: TransactionTrace.Type
    TRX_TYPE_OPTIMISM_DEPOSIT: TransactionTrace.Type
    TO_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    GAS_PRICE_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    GAS_USED_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LIST_FIELD_NUMBER: _ClassVar[int]
    MAX_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    RETURN_DATA_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    BEGIN_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    END_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    BLOB_GAS_FIELD_NUMBER: _ClassVar[int]
    BLOB_GAS_FEE_CAP_FIELD_NUMBER: _ClassVar[int]
    BLOB_HASHES_FIELD_NUMBER: _ClassVar[int]
    to: bytes
    nonce: int
    gas_price: BigInt
    gas_limit: int
    value: BigInt
    input: bytes
    v: bytes
    r: bytes
    s: bytes
    gas_used: int
    type: TransactionTrace.Type
    access_list: _containers.RepeatedCompositeFieldContainer[AccessTuple]
    max_fee_per_gas: BigInt
    max_priority_fee_per_gas: BigInt
    index: int
    hash: bytes
    return_data: bytes
    public_key: bytes
    begin_ordinal: int
    end_ordinal: int
    status: TransactionTraceStatus
    receipt: TransactionReceipt
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    blob_gas: int
    blob_gas_fee_cap: BigInt
    blob_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, to: _Optional[bytes] = ..., nonce: _Optional[int] = ..., gas_price: _Optional[_Union[BigInt, _Mapping]] = ..., gas_limit: _Optional[int] = ..., value: _Optional[_Union[BigInt, _Mapping]] = ..., input: _Optional[bytes] = ..., v: _Optional[bytes] = ..., r: _Optional[bytes] = ..., s: _Optional[bytes] = ..., gas_used: _Optional[int] = ..., type: _Optional[_Union[TransactionTrace.Type, str]] = ..., access_list: _Optional[_Iterable[_Union[AccessTuple, _Mapping]]] = ..., max_fee_per_gas: _Optional[_Union[BigInt, _Mapping]] = ..., max_priority_fee_per_gas: _Optional[_Union[BigInt, _Mapping]] = ..., index: _Optional[int] = ..., hash: _Optional[bytes] = ..., return_data: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., begin_ordinal: _Optional[int] = ..., end_ordinal: _Optional[int] = ..., status: _Optional[_Union[TransactionTraceStatus, str]] = ..., receipt: _Optional[_Union[TransactionReceipt, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., blob_gas: _Optional[int] = ..., blob_gas_fee_cap: _Optional[_Union[BigInt, _Mapping]] = ..., blob_hashes: _Optional[_Iterable[bytes]] = ..., **kwargs) -> None: ...

class AccessTuple(_message.Message):
    __slots__ = ("address", "storage_keys")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_KEYS_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    storage_keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, address: _Optional[bytes] = ..., storage_keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TransactionReceipt(_message.Message):
    __slots__ = ("state_root", "cumulative_gas_used", "logs_bloom", "logs", "blob_gas_used", "blob_gas_price")
    STATE_ROOT_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_GAS_USED_FIELD_NUMBER: _ClassVar[int]
    LOGS_BLOOM_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    BLOB_GAS_USED_FIELD_NUMBER: _ClassVar[int]
    BLOB_GAS_PRICE_FIELD_NUMBER: _ClassVar[int]
    state_root: bytes
    cumulative_gas_used: int
    logs_bloom: bytes
    logs: _containers.RepeatedCompositeFieldContainer[Log]
    blob_gas_used: int
    blob_gas_price: BigInt
    def __init__(self, state_root: _Optional[bytes] = ..., cumulative_gas_used: _Optional[int] = ..., logs_bloom: _Optional[bytes] = ..., logs: _Optional[_Iterable[_Union[Log, _Mapping]]] = ..., blob_gas_used: _Optional[int] = ..., blob_gas_price: _Optional[_Union[BigInt, _Mapping]] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("address", "topics", "data", "index", "blockIndex", "ordinal")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    BLOCKINDEX_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    topics: _containers.RepeatedScalarFieldContainer[bytes]
    data: bytes
    index: int
    blockIndex: int
    ordinal: int
    def __init__(self, address: _Optional[bytes] = ..., topics: _Optional[_Iterable[bytes]] = ..., data: _Optional[bytes] = ..., index: _Optional[int] = ..., blockIndex: _Optional[int] = ..., ordinal: _Optional[int] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("index", "parent_index", "depth", "call_type", "caller", "address", "value", "gas_limit", "gas_consumed", "return_data", "input", "executed_code", "suicide", "keccak_preimages", "storage_changes", "balance_changes", "nonce_changes", "logs", "code_changes", "gas_changes", "status_failed", "status_reverted", "failure_reason", "state_reverted", "begin_ordinal", "end_ordinal", "account_creations")
    class KeccakPreimagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    CALL_TYPE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    GAS_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    RETURN_DATA_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_CODE_FIELD_NUMBER: _ClassVar[int]
    SUICIDE_FIELD_NUMBER: _ClassVar[int]
    KECCAK_PREIMAGES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    BALANCE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    NONCE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    CODE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    GAS_CHANGES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FAILED_FIELD_NUMBER: _ClassVar[int]
    STATUS_REVERTED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_REVERTED_FIELD_NUMBER: _ClassVar[int]
    BEGIN_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    END_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CREATIONS_FIELD_NUMBER: _ClassVar[int]
    index: int
    parent_index: int
    depth: int
    call_type: CallType
    caller: bytes
    address: bytes
    value: BigInt
    gas_limit: int
    gas_consumed: int
    return_data: bytes
    input: bytes
    executed_code: bool
    suicide: bool
    keccak_preimages: _containers.ScalarMap[str, str]
    storage_changes: _containers.RepeatedCompositeFieldContainer[StorageChange]
    balance_changes: _containers.RepeatedCompositeFieldContainer[BalanceChange]
    nonce_changes: _containers.RepeatedCompositeFieldContainer[NonceChange]
    logs: _containers.RepeatedCompositeFieldContainer[Log]
    code_changes: _containers.RepeatedCompositeFieldContainer[CodeChange]
    gas_changes: _containers.RepeatedCompositeFieldContainer[GasChange]
    status_failed: bool
    status_reverted: bool
    failure_reason: str
    state_reverted: bool
    begin_ordinal: int
    end_ordinal: int
    account_creations: _containers.RepeatedCompositeFieldContainer[AccountCreation]
    def __init__(self, index: _Optional[int] = ..., parent_index: _Optional[int] = ..., depth: _Optional[int] = ..., call_type: _Optional[_Union[CallType, str]] = ..., caller: _Optional[bytes] = ..., address: _Optional[bytes] = ..., value: _Optional[_Union[BigInt, _Mapping]] = ..., gas_limit: _Optional[int] = ..., gas_consumed: _Optional[int] = ..., return_data: _Optional[bytes] = ..., input: _Optional[bytes] = ..., executed_code: _Optional[bool] = ..., suicide: _Optional[bool] = ..., keccak_preimages: _Optional[_Mapping[str, str]] = ..., storage_changes: _Optional[_Iterable[_Union[StorageChange, _Mapping]]] = ..., balance_changes: _Optional[_Iterable[_Union[BalanceChange, _Mapping]]] = ..., nonce_changes: _Optional[_Iterable[_Union[NonceChange, _Mapping]]] = ..., logs: _Optional[_Iterable[_Union[Log, _Mapping]]] = ..., code_changes: _Optional[_Iterable[_Union[CodeChange, _Mapping]]] = ..., gas_changes: _Optional[_Iterable[_Union[GasChange, _Mapping]]] = ..., status_failed: _Optional[bool] = ..., status_reverted: _Optional[bool] = ..., failure_reason: _Optional[str] = ..., state_reverted: _Optional[bool] = ..., begin_ordinal: _Optional[int] = ..., end_ordinal: _Optional[int] = ..., account_creations: _Optional[_Iterable[_Union[AccountCreation, _Mapping]]] = ...) -> None: ...

class StorageChange(_message.Message):
    __slots__ = ("address", "key", "old_value", "new_value", "ordinal")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    key: bytes
    old_value: bytes
    new_value: bytes
    ordinal: int
    def __init__(self, address: _Optional[bytes] = ..., key: _Optional[bytes] = ..., old_value: _Optional[bytes] = ..., new_value: _Optional[bytes] = ..., ordinal: _Optional[int] = ...) -> None: ...

class BalanceChange(_message.Message):
    __slots__ = ("address", "old_value", "new_value", "reason", "ordinal")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNKNOWN: _ClassVar[BalanceChange.Reason]
        REASON_REWARD_MINE_UNCLE: _ClassVar[BalanceChange.Reason]
        REASON_REWARD_MINE_BLOCK: _ClassVar[BalanceChange.Reason]
        REASON_DAO_REFUND_CONTRACT: _ClassVar[BalanceChange.Reason]
        REASON_DAO_ADJUST_BALANCE: _ClassVar[BalanceChange.Reason]
        REASON_TRANSFER: _ClassVar[BalanceChange.Reason]
        REASON_GENESIS_BALANCE: _ClassVar[BalanceChange.Reason]
        REASON_GAS_BUY: _ClassVar[BalanceChange.Reason]
        REASON_REWARD_TRANSACTION_FEE: _ClassVar[BalanceChange.Reason]
        REASON_REWARD_FEE_RESET: _ClassVar[BalanceChange.Reason]
        REASON_GAS_REFUND: _ClassVar[BalanceChange.Reason]
        REASON_TOUCH_ACCOUNT: _ClassVar[BalanceChange.Reason]
        REASON_SUICIDE_REFUND: _ClassVar[BalanceChange.Reason]
        REASON_SUICIDE_WITHDRAW: _ClassVar[BalanceChange.Reason]
        REASON_CALL_BALANCE_OVERRIDE: _ClassVar[BalanceChange.Reason]
        REASON_BURN: _ClassVar[BalanceChange.Reason]
        REASON_WITHDRAWAL: _ClassVar[BalanceChange.Reason]
        REASON_REWARD_BLOB_FEE: _ClassVar[BalanceChange.Reason]
        REASON_INCREASE_MINT: _ClassVar[BalanceChange.Reason]
    REASON_UNKNOWN: BalanceChange.Reason
    REASON_REWARD_MINE_UNCLE: BalanceChange.Reason
    REASON_REWARD_MINE_BLOCK: BalanceChange.Reason
    REASON_DAO_REFUND_CONTRACT: BalanceChange.Reason
    REASON_DAO_ADJUST_BALANCE: BalanceChange.Reason
    REASON_TRANSFER: BalanceChange.Reason
    REASON_GENESIS_BALANCE: BalanceChange.Reason
    REASON_GAS_BUY: BalanceChange.Reason
    REASON_REWARD_TRANSACTION_FEE: BalanceChange.Reason
    REASON_REWARD_FEE_RESET: BalanceChange.Reason
    REASON_GAS_REFUND: BalanceChange.Reason
    REASON_TOUCH_ACCOUNT: BalanceChange.Reason
    REASON_SUICIDE_REFUND: BalanceChange.Reason
    REASON_SUICIDE_WITHDRAW: BalanceChange.Reason
    REASON_CALL_BALANCE_OVERRIDE: BalanceChange.Reason
    REASON_BURN: BalanceChange.Reason
    REASON_WITHDRAWAL: BalanceChange.Reason
    REASON_REWARD_BLOB_FEE: BalanceChange.Reason
    REASON_INCREASE_MINT: BalanceChange.Reason
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    old_value: BigInt
    new_value: BigInt
    reason: BalanceChange.Reason
    ordinal: int
    def __init__(self, address: _Optional[bytes] = ..., old_value: _Optional[_Union[BigInt, _Mapping]] = ..., new_value: _Optional[_Union[BigInt, _Mapping]] = ..., reason: _Optional[_Union[BalanceChange.Reason, str]] = ..., ordinal: _Optional[int] = ...) -> None: ...

class NonceChange(_message.Message):
    __slots__ = ("address", "old_value", "new_value", "ordinal")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    old_value: int
    new_value: int
    ordinal: int
    def __init__(self, address: _Optional[bytes] = ..., old_value: _Optional[int] = ..., new_value: _Optional[int] = ..., ordinal: _Optional[int] = ...) -> None: ...

class AccountCreation(_message.Message):
    __slots__ = ("account", "ordinal")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    account: bytes
    ordinal: int
    def __init__(self, account: _Optional[bytes] = ..., ordinal: _Optional[int] = ...) -> None: ...

class CodeChange(_message.Message):
    __slots__ = ("address", "old_hash", "old_code", "new_hash", "new_code", "ordinal")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OLD_HASH_FIELD_NUMBER: _ClassVar[int]
    OLD_CODE_FIELD_NUMBER: _ClassVar[int]
    NEW_HASH_FIELD_NUMBER: _ClassVar[int]
    NEW_CODE_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    old_hash: bytes
    old_code: bytes
    new_hash: bytes
    new_code: bytes
    ordinal: int
    def __init__(self, address: _Optional[bytes] = ..., old_hash: _Optional[bytes] = ..., old_code: _Optional[bytes] = ..., new_hash: _Optional[bytes] = ..., new_code: _Optional[bytes] = ..., ordinal: _Optional[int] = ...) -> None: ...

class GasChange(_message.Message):
    __slots__ = ("old_value", "new_value", "reason", "ordinal")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNKNOWN: _ClassVar[GasChange.Reason]
        REASON_CALL: _ClassVar[GasChange.Reason]
        REASON_CALL_CODE: _ClassVar[GasChange.Reason]
        REASON_CALL_DATA_COPY: _ClassVar[GasChange.Reason]
        REASON_CODE_COPY: _ClassVar[GasChange.Reason]
        REASON_CODE_STORAGE: _ClassVar[GasChange.Reason]
        REASON_CONTRACT_CREATION: _ClassVar[GasChange.Reason]
        REASON_CONTRACT_CREATION2: _ClassVar[GasChange.Reason]
        REASON_DELEGATE_CALL: _ClassVar[GasChange.Reason]
        REASON_EVENT_LOG: _ClassVar[GasChange.Reason]
        REASON_EXT_CODE_COPY: _ClassVar[GasChange.Reason]
        REASON_FAILED_EXECUTION: _ClassVar[GasChange.Reason]
        REASON_INTRINSIC_GAS: _ClassVar[GasChange.Reason]
        REASON_PRECOMPILED_CONTRACT: _ClassVar[GasChange.Reason]
        REASON_REFUND_AFTER_EXECUTION: _ClassVar[GasChange.Reason]
        REASON_RETURN: _ClassVar[GasChange.Reason]
        REASON_RETURN_DATA_COPY: _ClassVar[GasChange.Reason]
        REASON_REVERT: _ClassVar[GasChange.Reason]
        REASON_SELF_DESTRUCT: _ClassVar[GasChange.Reason]
        REASON_STATIC_CALL: _ClassVar[GasChange.Reason]
        REASON_STATE_COLD_ACCESS: _ClassVar[GasChange.Reason]
        REASON_TX_INITIAL_BALANCE: _ClassVar[GasChange.Reason]
        REASON_TX_REFUNDS: _ClassVar[GasChange.Reason]
        REASON_TX_LEFT_OVER_RETURNED: _ClassVar[GasChange.Reason]
        REASON_CALL_INITIAL_BALANCE: _ClassVar[GasChange.Reason]
        REASON_CALL_LEFT_OVER_RETURNED: _ClassVar[GasChange.Reason]
    REASON_UNKNOWN: GasChange.Reason
    REASON_CALL: GasChange.Reason
    REASON_CALL_CODE: GasChange.Reason
    REASON_CALL_DATA_COPY: GasChange.Reason
    REASON_CODE_COPY: GasChange.Reason
    REASON_CODE_STORAGE: GasChange.Reason
    REASON_CONTRACT_CREATION: GasChange.Reason
    REASON_CONTRACT_CREATION2: GasChange.Reason
    REASON_DELEGATE_CALL: GasChange.Reason
    REASON_EVENT_LOG: GasChange.Reason
    REASON_EXT_CODE_COPY: GasChange.Reason
    REASON_FAILED_EXECUTION: GasChange.Reason
    REASON_INTRINSIC_GAS: GasChange.Reason
    REASON_PRECOMPILED_CONTRACT: GasChange.Reason
    REASON_REFUND_AFTER_EXECUTION: GasChange.Reason
    REASON_RETURN: GasChange.Reason
    REASON_RETURN_DATA_COPY: GasChange.Reason
    REASON_REVERT: GasChange.Reason
    REASON_SELF_DESTRUCT: GasChange.Reason
    REASON_STATIC_CALL: GasChange.Reason
    REASON_STATE_COLD_ACCESS: GasChange.Reason
    REASON_TX_INITIAL_BALANCE: GasChange.Reason
    REASON_TX_REFUNDS: GasChange.Reason
    REASON_TX_LEFT_OVER_RETURNED: GasChange.Reason
    REASON_CALL_INITIAL_BALANCE: GasChange.Reason
    REASON_CALL_LEFT_OVER_RETURNED: GasChange.Reason
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    old_value: int
    new_value: int
    reason: GasChange.Reason
    ordinal: int
    def __init__(self, old_value: _Optional[int] = ..., new_value: _Optional[int] = ..., reason: _Optional[_Union[GasChange.Reason, str]] = ..., ordinal: _Optional[int] = ...) -> None: ...

class HeaderOnlyBlock(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: BlockHeader
    def __init__(self, header: _Optional[_Union[BlockHeader, _Mapping]] = ...) -> None: ...

class BlockWithRefs(_message.Message):
    __slots__ = ("id", "block", "transaction_trace_refs", "irreversible")
    ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_TRACE_REFS_FIELD_NUMBER: _ClassVar[int]
    IRREVERSIBLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    block: Block
    transaction_trace_refs: TransactionRefs
    irreversible: bool
    def __init__(self, id: _Optional[str] = ..., block: _Optional[_Union[Block, _Mapping]] = ..., transaction_trace_refs: _Optional[_Union[TransactionRefs, _Mapping]] = ..., irreversible: _Optional[bool] = ...) -> None: ...

class TransactionTraceWithBlockRef(_message.Message):
    __slots__ = ("trace", "block_ref")
    TRACE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_REF_FIELD_NUMBER: _ClassVar[int]
    trace: TransactionTrace
    block_ref: BlockRef
    def __init__(self, trace: _Optional[_Union[TransactionTrace, _Mapping]] = ..., block_ref: _Optional[_Union[BlockRef, _Mapping]] = ...) -> None: ...

class TransactionRefs(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BlockRef(_message.Message):
    __slots__ = ("hash", "number")
    HASH_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    number: int
    def __init__(self, hash: _Optional[bytes] = ..., number: _Optional[int] = ...) -> None: ...
