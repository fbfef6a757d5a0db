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

class MimiInfo(_message.Message):
    __slots__ = ("model", "sample_rate_hertz", "frame_rate_hertz", "frame_size", "cardinality", "max_codebooks", "default_codebooks", "max_sessions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    CARDINALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    sample_rate_hertz: int
    frame_rate_hertz: float
    frame_size: int
    cardinality: int
    max_codebooks: int
    default_codebooks: int
    max_sessions: int
    def __init__(self, model: _Optional[str] = ..., sample_rate_hertz: _Optional[int] = ..., frame_rate_hertz: _Optional[float] = ..., frame_size: _Optional[int] = ..., cardinality: _Optional[int] = ..., max_codebooks: _Optional[int] = ..., default_codebooks: _Optional[int] = ..., max_sessions: _Optional[int] = ...) -> None: ...

class Codes(_message.Message):
    __slots__ = ("num_codebooks", "num_frames", "codes")
    NUM_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    num_codebooks: int
    num_frames: int
    codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_codebooks: _Optional[int] = ..., num_frames: _Optional[int] = ..., codes: _Optional[_Iterable[int]] = ...) -> None: ...

class EncodeConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz", "num_codebooks")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    NUM_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    encoding: _common_pb2.AudioEncoding
    sample_rate_hertz: int
    num_codebooks: int
    def __init__(self, encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., num_codebooks: _Optional[int] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: EncodeConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[EncodeConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("codes", "num_samples")
    CODES_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    codes: Codes
    num_samples: int
    def __init__(self, codes: _Optional[_Union[Codes, _Mapping]] = ..., num_samples: _Optional[int] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("codes", "encoding", "num_samples")
    CODES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    codes: Codes
    encoding: _common_pb2.AudioEncoding
    num_samples: int
    def __init__(self, codes: _Optional[_Union[Codes, _Mapping]] = ..., encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., num_samples: _Optional[int] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("audio", "sample_rate_hertz", "num_samples")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate_hertz: int
    num_samples: int
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate_hertz: _Optional[int] = ..., num_samples: _Optional[int] = ...) -> None: ...

class StreamingEncodeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: EncodeConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[EncodeConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class StreamingEncodeResponse(_message.Message):
    __slots__ = ("frame_index", "frame", "audio_received_seconds")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    AUDIO_RECEIVED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    frame: _common_pb2.CodeFrame
    audio_received_seconds: float
    def __init__(self, frame_index: _Optional[int] = ..., frame: _Optional[_Union[_common_pb2.CodeFrame, _Mapping]] = ..., audio_received_seconds: _Optional[float] = ...) -> None: ...

class DecodeConfig(_message.Message):
    __slots__ = ("num_codebooks", "encoding")
    NUM_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    num_codebooks: int
    encoding: _common_pb2.AudioEncoding
    def __init__(self, num_codebooks: _Optional[int] = ..., encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ...) -> None: ...

class StreamingDecodeRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: DecodeConfig
    frame: _common_pb2.CodeFrame
    def __init__(self, config: _Optional[_Union[DecodeConfig, _Mapping]] = ..., frame: _Optional[_Union[_common_pb2.CodeFrame, _Mapping]] = ...) -> None: ...

class StreamingDecodeResponse(_message.Message):
    __slots__ = ("frame_index", "audio")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    audio: bytes
    def __init__(self, frame_index: _Optional[int] = ..., audio: _Optional[bytes] = ...) -> None: ...
