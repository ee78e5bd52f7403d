from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForkStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_UNSET: _ClassVar[ForkStep]
    STEP_NEW: _ClassVar[ForkStep]
    STEP_UNDO: _ClassVar[ForkStep]
    STEP_FINAL: _ClassVar[ForkStep]
STEP_UNSET: ForkStep
STEP_NEW: ForkStep
STEP_UNDO: ForkStep
STEP_FINAL: ForkStep

class SingleBlockRequest(_message.Message):
    __slots__ = ("block_number", "block_hash_and_number", "cursor", "transforms")
    class BlockNumber(_message.Message):
        __slots__ = ("num",)
        NUM_FIELD_NUMBER: _ClassVar[int]
        num: int
        def __init__(self, num: _Optional[int] = ...) -> None: ...
    class BlockHashAndNumber(_message.Message):
        __slots__ = ("num", "hash")
        NUM_FIELD_NUMBER: _ClassVar[int]
        HASH_FIELD_NUMBER: _ClassVar[int]
        num: int
        hash: str
        def __init__(self, num: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...
    class Cursor(_message.Message):
        __slots__ = ("cursor",)
        CURSOR_FIELD_NUMBER: _ClassVar[int]
        cursor: str
        def __init__(self, cursor: _Optional[str] = ...) -> None: ...
    BLOCK_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_AND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    block_number: SingleBlockRequest.BlockNumber
    block_hash_and_number: SingleBlockRequest.BlockHashAndNumber
    cursor: SingleBlockRequest.Cursor
    transforms: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, block_number: _Optional[_Union[SingleBlockRequest.BlockNumber, _Mapping]] = ..., block_hash_and_number: _Optional[_Union[SingleBlockRequest.BlockHashAndNumber, _Mapping]] = ..., cursor: _Optional[_Union[SingleBlockRequest.Cursor, _Mapping]] = ..., transforms: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class SingleBlockResponse(_message.Message):
    __slots__ = ("block",)
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    block: _any_pb2.Any
    def __init__(self, block: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("start_block_num", "cursor", "stop_block_num", "final_blocks_only", "transforms")
    START_BLOCK_NUM_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STOP_BLOCK_NUM_FIELD_NUMBER: _ClassVar[int]
    FINAL_BLOCKS_ONLY_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    start_block_num: int
    cursor: str
    stop_block_num: int
    final_blocks_only: bool
    transforms: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, start_block_num: _Optional[int] = ..., cursor: _Optional[str] = ..., stop_block_num: _Optional[int] = ..., final_blocks_only: _Optional[bool] = ..., transforms: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("block", "step", "cursor")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    block: _any_pb2.Any
    step: ForkStep
    cursor: str
    def __init__(self, block: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., step: _Optional[_Union[ForkStep, str]] = ..., cursor: _Optional[str] = ...) -> None: ...
