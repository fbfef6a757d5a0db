"""Talking to Moshi from a client: stream the user's audio (paced in real time or as fast as
possible), collect Moshi's frames with their arrival times. Used by ``moshi-services dialogue``
and by the benchmark; works on a gRPC stub or on an in-process ``DialogueService`` alike."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from services.core.common_pb2 import PCM_F32LE
from services.core.constants import FRAME_MS, FRAME_SIZE, SAMPLE_RATE
from services.core.engine import run_session
from services.core.grpc_client import RemoteStream
from services.core.pcm import encode_pcm
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.pipeline import DialogueFrame


@dataclasses.dataclass
class Conversation:
    """Moshi's side of one dialogue and when each piece happened (time.monotonic seconds)."""

    frames: list[DialogueFrame]
    sent_at: list[float]  # when user frame i was complete (its last chunk sent)
    received_at: list[float]  # when Moshi's frame i arrived
    model_delay: int  # frames between a user frame and the reply frame it completes

    @property
    def audio(self) -> np.ndarray:
        return (np.concatenate([f.audio for f in self.frames]) if self.frames
                else np.zeros(0, dtype=np.float32))

    def latencies_ms(self) -> np.ndarray:
        """Per reply frame: arrival minus the moment the user frame it needed was complete
        (Moshi's frame n comes from the step that consumed user frame n + model_delay)."""
        pairs = [(r, self.sent_at[i + self.model_delay]) for i, r in
                 enumerate(self.received_at) if i + self.model_delay < len(self.sent_at)]
        return np.array([1000 * (r - s) for r, s in pairs])

    def transcript(self) -> list[tuple[float, str]]:
        """(seconds into Moshi's audio, text piece) for every piece that carries text."""
        return [(f.index * FRAME_MS / 1000, f.text) for f in self.frames if f.text]


def remote_dialogue(stub: dialogue_pb2_grpc.DialogueStub, config: dialogue_pb2.DialogueConfig,
                    metadata=None) -> RemoteStream:
    """A Converse call used like a session: 24 kHz float32 chunks in, DialogueFrames out."""
    wire = dialogue_pb2.DialogueConfig()
    wire.CopyFrom(config)  # sampling and seed as given; the audio format is this client's
    wire.input_encoding, wire.input_sample_rate_hertz = PCM_F32LE, SAMPLE_RATE
    wire.output_encoding = PCM_F32LE
    return RemoteStream(
        stub.Converse, dialogue_pb2.ConverseRequest(config=wire),
        lambda chunk: dialogue_pb2.ConverseRequest(audio=encode_pcm(chunk, PCM_F32LE)),
        lambda r: DialogueFrame(r.frame_index, np.frombuffer(r.audio, dtype="<f4"),
                                r.text_token, r.text),
        metadata=metadata)


def converse(session, audio: np.ndarray, model_delay: int, realtime: bool = True,
             on_frame: Callable[[DialogueFrame], None] | None = None) -> Conversation:
    """Streams 24 kHz ``audio`` into ``session`` one 80 ms frame at a time (at the pace of
    real time, or as fast as the session takes it) while collecting the reply."""
    frames = np.pad(audio, (0, -len(audio) % FRAME_SIZE)).reshape(-1, FRAME_SIZE)
    sent_at: list[float] = []
    start = time.monotonic()

    def paced():
        for i, frame in enumerate(frames):
            if realtime:  # frame i is complete (FRAME_MS * (i + 1)) ms after the start
                time.sleep(max(0.0, start + (i + 1) * FRAME_MS / 1000 - time.monotonic()))
            sent_at.append(time.monotonic())
            yield frame

    received_at: list[float] = []

    def arrived(frame: DialogueFrame) -> None:
        received_at.append(time.monotonic())
        if on_frame is not None:
            on_frame(frame)

    replies = run_session(session, paced(), on_output=arrived)
    return Conversation(replies, sent_at, received_at, model_delay)
