from services.core import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LMInfo(_message.Message):
    __slots__ = ("model", "text_cardinality", "audio_cardinality", "num_input_codebooks", "num_output_codebooks", "delays", "max_delay", "context", "max_sessions", "default_text_sampling", "default_audio_sampling")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_CARDINALITY_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CARDINALITY_FIELD_NUMBER: _ClassVar[int]
    NUM_INPUT_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    NUM_OUTPUT_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    DELAYS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TEXT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AUDIO_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    model: str
    text_cardinality: int
    audio_cardinality: int
    num_input_codebooks: int
    num_output_codebooks: int
    delays: _containers.RepeatedScalarFieldContainer[int]
    max_delay: int
    context: int
    max_sessions: int
    default_text_sampling: _common_pb2.SamplingParams
    default_audio_sampling: _common_pb2.SamplingParams
    def __init__(self, model: _Optional[str] = ..., text_cardinality: _Optional[int] = ..., audio_cardinality: _Optional[int] = ..., num_input_codebooks: _Optional[int] = ..., num_output_codebooks: _Optional[int] = ..., delays: _Optional[_Iterable[int]] = ..., max_delay: _Optional[int] = ..., context: _Optional[int] = ..., max_sessions: _Optional[int] = ..., default_text_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., default_audio_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ...) -> None: ...

class GenerateConfig(_message.Message):
    __slots__ = ("text_sampling", "audio_sampling", "seed")
    TEXT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    text_sampling: _common_pb2.SamplingParams
    audio_sampling: _common_pb2.SamplingParams
    seed: int
    def __init__(self, text_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., audio_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("config", "user_frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    USER_FRAME_FIELD_NUMBER: _ClassVar[int]
    config: GenerateConfig
    user_frame: _common_pb2.CodeFrame
    def __init__(self, config: _Optional[_Union[GenerateConfig, _Mapping]] = ..., user_frame: _Optional[_Union[_common_pb2.CodeFrame, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("frame_index", "text_token", "text", "audio")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    text_token: int
    text: str
    audio: _common_pb2.CodeFrame
    def __init__(self, frame_index: _Optional[int] = ..., text_token: _Optional[int] = ..., text: _Optional[str] = ..., audio: _Optional[_Union[_common_pb2.CodeFrame, _Mapping]] = ...) -> None: ...
