"""``/api/asr-streaming``: Kyutai STT's websocket (moshi-server's wire format, MIT / Apache-2.0)
over recognition sessions of our ASRService.

    client                                       server
    (upgrade, kyutai-api-key / auth_id)  ---->
                                         <----   {"type": "Ready"}
    {"type": "Audio", "pcm": [f32 24 kHz]} -->   (any length per message)
    {"type": "OggOpus", "data": <bytes>}  --->   (Ogg pages of 24 kHz Opus, instead of Audio)
    {"type": "Marker", "id": int}  -------->
                                         <----   {"type": "Word", "text", "start_time"}
                                         <----   {"type": "EndWord", "stop_time"}
                                         <----   {"type": "Step", "step_idx", "prs",
                                                  "buffered_pcm"}  (models with pause heads)
                                         <----   {"type": "Marker", "id"}
                                         <----   {"type": "Error", "message"}, then close

A Marker comes back, as from moshi-server, once the words of the audio sent before it are
out: it is fed to the session the model's text delay after its place in the audio, so the
client keeps streaming (silence will do) until it returns, then closes. Times are seconds
of the client's audio. Word is sent as soon as the word is heard, EndWord once it ends.
Optional query parameters (ours): ``temperature``, ``top_k``, ``seed`` of the text sampling.
"""

from __future__ import annotations

import collections

import numpy as np
import sphn
from aiohttp import WSMsgType, web

from services.asr import asr_pb2
from services.asr.mode import ASREvent, Marker
from services.asr.service import ASRService
from services.core.common_pb2 import PCM_F32LE
from services.core.constants import SAMPLE_RATE
from services.core.engine import InvalidInput
from services.kyutai.messages import (
    field,
    pack,
    query_number,
    query_seed,
    session_slots,
    unpack,
)
from services.kyutai.socket import pump, serve_socket

PATH = "/api/asr-streaming"
IN_TYPES = "Audio, OggOpus or Marker"


async def send_error(ws: web.WebSocketResponse, message: str) -> None:
    await ws.send_bytes(pack("Error", message=message))


def recognition_config(request: web.Request, pauses: bool) -> asr_pb2.RecognitionConfig:
    """24 kHz float32, interim words (Word comes when a word is heard), pause probabilities
    when the model has the heads (Step.prs); text sampling from the optional query
    parameters ``temperature``, ``top_k``, ``seed`` (our addition: moshi-server sets them in
    its config file)."""
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=SAMPLE_RATE,
                                       interim_results=True, pause_probabilities=pauses)
    if (temperature := query_number(request, "temperature", float)) is not None:
        config.text_sampling.temperature = temperature
    if (top_k := query_number(request, "top_k", int)) is not None:
        config.text_sampling.top_k = top_k
    if (seed := query_seed(request)) is not None:
        config.seed = seed
    return config


class AsrStreaming:
    """The route, over ``service``'s sessions."""

    def __init__(self, service: ASRService):
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.handle)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        async def call(ws: web.WebSocketResponse) -> None:
            await self._call(ws, recognition_config(request, self.service.pause_heads > 0))

        return await serve_socket(request, PATH, send_error, call,
                                  session_slots(self.service.engine))

    async def _call(self, ws: web.WebSocketResponse, config: asr_pb2.RecognitionConfig) -> None:
        recognition = self.service.open(config)
        delay = round(self.service.timing.audio_delay_seconds * SAMPLE_RATE)
        reader, writer = _Reader(recognition, delay), _Writer()
        await ws.send_bytes(pack("Ready"))

        async def write(event: ASREvent) -> None:
            for message in writer.messages(event):
                await ws.send_bytes(message)

        await pump(ws, recognition.session, reader.read, write)


class _Reader:
    """Client messages -> session inputs (frames and markers)."""

    def __init__(self, recognition, marker_delay_samples: int):
        self.recognition = recognition
        self.marker_delay = marker_delay_samples
        self.samples = 0  # of the client's audio so far
        self.markers: collections.deque[tuple[int, int]] = collections.deque()  # (due, id)
        self._opus: sphn.OpusStreamReader | None = None

    def read(self, kind: WSMsgType, data) -> list:
        if kind != WSMsgType.BINARY:  # moshi-server ignores text frames here too
            return []
        message = unpack(data, IN_TYPES)
        match message["type"]:
            case "Audio":
                return self._audio(_pcm(field(message, "pcm", list, bytes)))
            case "OggOpus":
                if self._opus is None:
                    self._opus = sphn.OpusStreamReader(SAMPLE_RATE)
                try:
                    pcm = self._opus.append_bytes(bytes(field(message, "data", bytes)))
                except ValueError as error:  # sphn: a bad page (said once more bytes come)
                    raise InvalidInput(f"OggOpus data is not Ogg-Opus: {error}") from None
                return self._audio(np.asarray(pcm, np.float32))
            case "Marker":
                marker = field(message, "id", int)
                self.markers.append((self.samples + self.marker_delay, marker))
                return self._due()
            case "Init":  # moshi-server's batched mode takes it and does nothing with it
                return []
            case other:
                raise InvalidInput(f"unknown message type {other!r}; expected {IN_TYPES}")

    def _audio(self, pcm: np.ndarray) -> list:
        self.samples += len(pcm)
        return [*self.recognition.frames(pcm.tobytes()), *self._due()]

    def _due(self) -> list:
        due = []
        while self.markers and self.markers[0][0] <= self.samples:
            due.append(Marker(self.markers.popleft()[1]))
        return due


def _pcm(value) -> np.ndarray:
    """Audio.pcm as float32 samples: a list of numbers (or packed float32 bytes)."""
    try:
        pcm = (np.frombuffer(value, "<f4") if isinstance(value, bytes)
               else np.asarray(value, dtype=np.float32))
    except (ValueError, TypeError):
        raise InvalidInput("Audio.pcm must be a list of numbers (float32 samples at 24 kHz)") \
            from None
    if pcm.ndim != 1:
        raise InvalidInput(f"Audio.pcm must be a flat list of samples, got shape {pcm.shape}")
    if not np.isfinite(pcm).all():
        raise InvalidInput("Audio.pcm contains NaN or infinite samples")
    return pcm


class _Writer:
    """Session events -> Kyutai's messages: Word when a word is heard, EndWord when it ends."""

    def __init__(self):
        self.announced: float | None = None  # start of the word told by Word, not yet ended
        self.steps = 0

    def messages(self, event: ASREvent) -> list[bytes]:
        if event.marker is not None:
            return [pack("Marker", id=event.marker)]
        if event.pauses is not None:
            self.steps += 1
            return [pack("Step", step_idx=self.steps - 1, prs=event.pauses, buffered_pcm=0)]
        word = event.word
        if word is None:  # speech events: Kyutai's clients read them off Step.prs
            return []
        out = []
        if self.announced != word.start:
            out.append(pack("Word", text=word.text, start_time=word.start))
            self.announced = word.start
        if word.end is not None:
            out.append(pack("EndWord", stop_time=word.end))
            self.announced = None
        return out
