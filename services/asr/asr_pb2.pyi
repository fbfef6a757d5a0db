from services.core import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecognizerInfo(_message.Message):
    __slots__ = ("model", "text_delay_seconds", "silence_prefix_seconds", "pause_prediction", "num_pause_heads", "max_sessions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SILENCE_PREFIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAUSE_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    NUM_PAUSE_HEADS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    text_delay_seconds: float
    silence_prefix_seconds: float
    pause_prediction: bool
    num_pause_heads: int
    max_sessions: int
    def __init__(self, model: _Optional[str] = ..., text_delay_seconds: _Optional[float] = ..., silence_prefix_seconds: _Optional[float] = ..., pause_prediction: _Optional[bool] = ..., num_pause_heads: _Optional[int] = ..., max_sessions: _Optional[int] = ...) -> None: ...

class RecognitionConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz", "interim_results", "pause_probabilities", "text_sampling", "seed")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    PAUSE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TEXT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    encoding: _common_pb2.AudioEncoding
    sample_rate_hertz: int
    interim_results: bool
    pause_probabilities: bool
    text_sampling: _common_pb2.SamplingParams
    seed: int
    def __init__(self, encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., interim_results: _Optional[bool] = ..., pause_probabilities: _Optional[bool] = ..., text_sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("words", "transcript", "audio_seconds")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedCompositeFieldContainer[Word]
    transcript: str
    audio_seconds: float
    def __init__(self, words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., transcript: _Optional[str] = ..., audio_seconds: _Optional[float] = ...) -> None: ...

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio", "marker")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    marker: Marker
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., marker: _Optional[_Union[Marker, _Mapping]] = ...) -> None: ...

class Marker(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start_seconds", "end_seconds")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_seconds: float
    end_seconds: float
    def __init__(self, text: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class SpeechEvent(_message.Message):
    __slots__ = ("kind", "time_seconds")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SpeechEvent.Kind]
        SPEECH_STARTED: _ClassVar[SpeechEvent.Kind]
        END_OF_TURN: _ClassVar[SpeechEvent.Kind]
    KIND_UNSPECIFIED: SpeechEvent.Kind
    SPEECH_STARTED: SpeechEvent.Kind
    END_OF_TURN: SpeechEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    kind: SpeechEvent.Kind
    time_seconds: float
    def __init__(self, kind: _Optional[_Union[SpeechEvent.Kind, str]] = ..., time_seconds: _Optional[float] = ...) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("word", "speech_event", "pause", "marker", "audio_processed_seconds")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SPEECH_EVENT_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_PROCESSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    word: Word
    speech_event: SpeechEvent
    pause: PauseProbabilities
    marker: Marker
    audio_processed_seconds: float
    def __init__(self, word: _Optional[_Union[Word, _Mapping]] = ..., speech_event: _Optional[_Union[SpeechEvent, _Mapping]] = ..., pause: _Optional[_Union[PauseProbabilities, _Mapping]] = ..., marker: _Optional[_Union[Marker, _Mapping]] = ..., audio_processed_seconds: _Optional[float] = ...) -> None: ...

class PauseProbabilities(_message.Message):
    __slots__ = ("probabilities",)
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, probabilities: _Optional[_Iterable[float]] = ...) -> None: ...
