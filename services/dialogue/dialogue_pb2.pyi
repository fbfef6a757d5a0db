from services.core import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DialogueInfo(_message.Message):
    __slots__ = ("sample_rate_hertz", "frame_size", "model_delay_frames", "mimi", "lm")
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_DELAY_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MIMI_FIELD_NUMBER: _ClassVar[int]
    LM_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hertz: int
    frame_size: int
    model_delay_frames: int
    mimi: str
    lm: str
    def __init__(self, sample_rate_hertz: _Optional[int] = ..., frame_size: _Optional[int] = ..., model_delay_frames: _Optional[int] = ..., mimi: _Optional[str] = ..., lm: _Optional[str] = ...) -> None: ...

class DialogueConfig(_message.Message):
    __slots__ = ("input_encoding", "input_sample_rate_hertz", "output_encoding", "text_sampling", "audio_sampling", "seed")
    INPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    INPUT_SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    TEXT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    input_encoding: _common_pb2.AudioEncoding
    input_sample_rate_hertz: int
    output_encoding: _common_pb2.AudioEncoding
    text_sampling: _common_pb2.SamplingParams
    audio_sampling: _common_pb2.SamplingParams
    seed: int
    def __init__(self, input_encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., input_sample_rate_hertz: _Optional[int] = ..., output_encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., text_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., audio_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: DialogueConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[DialogueConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("frame_index", "audio", "text_token", "text", "audio_received_seconds")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_RECEIVED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    audio: bytes
    text_token: int
    text: str
    audio_received_seconds: float
    def __init__(self, frame_index: _Optional[int] = ..., audio: _Optional[bytes] = ..., text_token: _Optional[int] = ..., text: _Optional[str] = ..., audio_received_seconds: _Optional[float] = ...) -> None: ...
