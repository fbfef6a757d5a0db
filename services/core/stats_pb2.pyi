from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("engines",)
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    engines: _containers.RepeatedCompositeFieldContainer[EngineFigures]
    def __init__(self, engines: _Optional[_Iterable[_Union[EngineFigures, _Mapping]]] = ...) -> None: ...

class EngineFigures(_message.Message):
    __slots__ = ("name", "max_sessions", "active_sessions", "sessions_started", "sessions_rejected", "sessions_timed_out", "steps", "frames", "step_ms_last", "step_ms_p50", "step_ms_p99", "mean_batch", "real_time_factor", "queued_frames")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_STARTED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STEP_MS_LAST_FIELD_NUMBER: _ClassVar[int]
    STEP_MS_P50_FIELD_NUMBER: _ClassVar[int]
    STEP_MS_P99_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_sessions: int
    active_sessions: int
    sessions_started: int
    sessions_rejected: int
    sessions_timed_out: int
    steps: int
    frames: int
    step_ms_last: float
    step_ms_p50: float
    step_ms_p99: float
    mean_batch: float
    real_time_factor: float
    queued_frames: int
    def __init__(self, name: _Optional[str] = ..., max_sessions: _Optional[int] = ..., active_sessions: _Optional[int] = ..., sessions_started: _Optional[int] = ..., sessions_rejected: _Optional[int] = ..., sessions_timed_out: _Optional[int] = ..., steps: _Optional[int] = ..., frames: _Optional[int] = ..., step_ms_last: _Optional[float] = ..., step_ms_p50: _Optional[float] = ..., step_ms_p99: _Optional[float] = ..., mean_batch: _Optional[float] = ..., real_time_factor: _Optional[float] = ..., queued_frames: _Optional[int] = ...) -> None: ...
