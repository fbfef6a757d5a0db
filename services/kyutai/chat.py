"""``/api/chat``: Moshi's dialogue websocket (moshi-server's wire format, MIT / Apache-2.0) over
our DialogueService's sessions.

Every message is binary: one kind byte, then the payload.

    kind 0  handshake   server -> client once the session is open (payload empty)
    kind 1  audio       both ways: Ogg-Opus pages of 24 kHz mono (``sphn``)
    kind 2  text        server -> client: Moshi's text, utf-8, piece by piece
    kind 5  error       server -> client: utf-8 message, then the socket closes

Our addition for the web page: ``/api/chat?format=pcm`` frames kind 1 the same way but its
payloads are raw float32 little-endian mono samples at 24 kHz, any length per message, both
ways. Query parameters for sampling: ``temperature`` and ``top_k`` (audio),
``text_temperature`` and ``text_top_k``, ``seed``: as the gRPC dialogue config's fields.
"""

from __future__ import annotations

import numpy as np
import sphn
from aiohttp import WSMsgType, web

from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.core.constants import SAMPLE_RATE
from services.core.engine import InvalidInput
from services.core.pcm import FrameSplitter
from services.dialogue import dialogue_pb2
from services.dialogue.mode import DialogueFrame
from services.dialogue.service import DialogueService
from services.kyutai.messages import (
    KIND_AUDIO,
    KIND_ERROR,
    KIND_HANDSHAKE,
    KIND_TEXT,
    query_number,
    query_seed,
    session_slots,
)
from services.kyutai.socket import pump, serve_socket

PATH = "/api/chat"
FORMATS = ("opus", "pcm")


async def send_error(ws: web.WebSocketResponse, message: str) -> None:
    await ws.send_bytes(bytes([KIND_ERROR]) + message.encode())


def dialogue_config(request: web.Request) -> dialogue_pb2.DialogueConfig:
    """The query parameters as a dialogue config (the service validates the values)."""
    text, audio = SamplingParams(), SamplingParams()
    for params, prefix in ((text, "text_"), (audio, "")):
        if (temperature := query_number(request, f"{prefix}temperature", float)) is not None:
            params.temperature = temperature
        if (top_k := query_number(request, f"{prefix}top_k", int)) is not None:
            params.top_k = top_k
    config = dialogue_pb2.DialogueConfig(
        input_encoding=PCM_F32LE, input_sample_rate_hertz=SAMPLE_RATE,
        output_encoding=PCM_F32LE, text_sampling=text, audio_sampling=audio)
    if (seed := query_seed(request)) is not None:
        config.seed = seed
    return config


class Chat:
    """The route, over ``service``'s dialogues."""

    def __init__(self, service: DialogueService):
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.handle)

    @property
    def max_sessions(self) -> int | None:
        engine = getattr(self.service.lm, "engine", None)
        return None if engine is None else session_slots(engine)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        async def call(ws: web.WebSocketResponse) -> None:
            fmt = request.query.get("format", "opus")
            if fmt not in FORMATS:
                raise InvalidInput(f"format must be opus (Ogg-Opus pages, the default) or "
                                   f"pcm (raw float32 at 24 kHz), got {fmt!r}")
            config = dialogue_config(request)
            session = self.service.open(config)
            audio = _Audio(fmt == "pcm")
            await ws.send_bytes(bytes([KIND_HANDSHAKE]))

            async def write(frame: DialogueFrame) -> None:
                # A frame's text before its audio: the text token is sampled first.
                if frame.text:
                    await ws.send_bytes(bytes([KIND_TEXT]) + frame.text.encode())
                if data := audio.encode(frame.audio):
                    await ws.send_bytes(bytes([KIND_AUDIO]) + data)

            await pump(ws, session, audio.read, write)

        return await serve_socket(request, PATH, send_error, call, self.max_sessions)


class _Audio:
    """The user's kind-1 messages -> 1920-sample frames; Moshi's frames -> kind-1 payloads."""

    def __init__(self, raw_pcm: bool):
        self.raw_pcm = raw_pcm
        self.splitter = FrameSplitter(PCM_F32LE, SAMPLE_RATE)
        self._reader = None if raw_pcm else sphn.OpusStreamReader(SAMPLE_RATE)
        self._writer = None if raw_pcm else sphn.OpusStreamWriter(SAMPLE_RATE)

    def read(self, kind: WSMsgType, data) -> list[np.ndarray]:
        if kind != WSMsgType.BINARY or not data:
            raise InvalidInput("chat messages are binary: a kind byte (1: audio), then the "
                               "payload")
        if data[0] != KIND_AUDIO:
            raise InvalidInput(f"unexpected message kind {data[0]}; the client sends audio "
                               "(kind 1) only")
        if self.raw_pcm:
            return list(self.splitter.push(bytes(data[1:])))  # PcmError: not whole samples
        try:
            pcm = self._reader.append_bytes(bytes(data[1:]))
        except ValueError as error:  # sphn: a bad page (said once more bytes come)
            raise InvalidInput(f"kind-1 audio is not Ogg-Opus: {error}") from None
        return list(self.splitter.push(np.asarray(pcm, np.float32).tobytes()))

    def encode(self, pcm: np.ndarray) -> bytes:
        pcm = np.asarray(pcm, np.float32)
        return pcm.astype("<f4").tobytes() if self.raw_pcm else self._writer.append_pcm(pcm)
