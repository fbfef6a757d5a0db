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

class SynthesizerInfo(_message.Message):
    __slots__ = ("model", "audio_delay_seconds", "max_codebooks", "max_sessions", "voice_conditioning")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    VOICE_CONDITIONING_FIELD_NUMBER: _ClassVar[int]
    model: str
    audio_delay_seconds: float
    max_codebooks: int
    max_sessions: int
    voice_conditioning: bool
    def __init__(self, model: _Optional[str] = ..., audio_delay_seconds: _Optional[float] = ..., max_codebooks: _Optional[int] = ..., max_sessions: _Optional[int] = ..., voice_conditioning: _Optional[bool] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, voices: _Optional[_Iterable[str]] = ...) -> None: ...

class SynthesisConfig(_message.Message):
    __slots__ = ("voice", "encoding", "sample_rate_hertz", "num_codebooks", "text_sampling", "audio_sampling", "seed", "cfg_coef", "speed_bias")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    NUM_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    TEXT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CFG_COEF_FIELD_NUMBER: _ClassVar[int]
    SPEED_BIAS_FIELD_NUMBER: _ClassVar[int]
    voice: str
    encoding: _common_pb2.AudioEncoding
    sample_rate_hertz: int
    num_codebooks: int
    text_sampling: _common_pb2.SamplingParams
    audio_sampling: _common_pb2.SamplingParams
    seed: int
    cfg_coef: float
    speed_bias: float
    def __init__(self, voice: _Optional[str] = ..., encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., num_codebooks: _Optional[int] = ..., text_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., audio_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ..., cfg_coef: _Optional[float] = ..., speed_bias: _Optional[float] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class WordTiming(_message.Message):
    __slots__ = ("text", "start_seconds")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_seconds: float
    def __init__(self, text: _Optional[str] = ..., start_seconds: _Optional[float] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "words", "audio_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    words: _containers.RepeatedCompositeFieldContainer[WordTiming]
    audio_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., words: _Optional[_Iterable[_Union[WordTiming, _Mapping]]] = ..., audio_seconds: _Optional[float] = ...) -> None: ...

class StreamingSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text", "end_of_input")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    END_OF_INPUT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    end_of_input: EndOfInput
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ..., end_of_input: _Optional[_Union[EndOfInput, _Mapping]] = ...) -> None: ...

class EndOfInput(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SynthesisChunk(_message.Message):
    __slots__ = ("audio", "words", "waiting_for_text", "audio_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    words: _containers.RepeatedCompositeFieldContainer[WordTiming]
    waiting_for_text: bool
    audio_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., words: _Optional[_Iterable[_Union[WordTiming, _Mapping]]] = ..., waiting_for_text: _Optional[bool] = ..., audio_seconds: _Optional[float] = ...) -> None: ...
