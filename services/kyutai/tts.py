"""``/api/tts_streaming``: Kyutai TTS's websocket (moshi-server's wire format, MIT /
Apache-2.0) over synthesis sessions of our TTSService.

Query parameters: ``voice`` (a name from /api/voices, or Kyutai's name of it without the
``.<signature>@<epoch>`` suffix; one the server does not have, as Kyutai's scripts send by
default, falls back to the server's default voice), ``format`` (``OggOpus``, the default
as in moshi-server, ``OggOpusMessagePack``, ``Pcm`` or ``PcmMessagePack``), ``seed``,
``temperature`` and ``top_k`` (text and audio alike, as moshi-server samples both),
``cfg_alpha`` (classifier-free guidance; our cfg_coef). Absent: our service's defaults.

    client                                        server
                                          <----   {"type": "Ready"}         (MessagePack formats)
    text frame "Hello world"  ------------->      (each message ends a word)
    {"type": "Text", "text": "..."}  ------>
    {"type": "Eos"} or binary b"\\0"  ----->      (end of the text)
                                          <----   {"type": "Text", "text", "start_s", "stop_s"}
                                          <----   {"type": "Audio", "pcm": [f32 24 kHz]}
                                                  or Ogg-Opus pages / raw f32le (other formats)
                                          <----   close after the last audio

Text{...} of a word is sent once it has ended (the next word started, or the audio did).
"""

from __future__ import annotations

import logging

import numpy as np
import sphn
from aiohttp import WSMsgType, web

from services.core.common_pb2 import PCM_F32LE, SamplingParams
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
from services.kyutai.socket import END, pump, serve_socket
from services.tts import tts_pb2
from services.tts.conditioning import VOICE_SUFFIX, list_voices
from services.tts.mode import SynthesisChunk
from services.tts.service import TTSService

log = logging.getLogger(__name__)
PATH = "/api/tts_streaming"
FORMATS = ("OggOpus", "OggOpusMessagePack", "Pcm", "PcmMessagePack")
IN_TYPES = "Text, Eos or Voice"


def voice_named(service: TTSService, name: str) -> str:
    """The server's voice ``name`` stands for ("": the default voice)."""
    voices = list_voices(service.voices_dir) if service.voices_dir and name else []
    if name in voices or f"{name}{VOICE_SUFFIX}" in voices:
        return name
    # Kyutai's tts-voices files are "<name>.<signature>@<epoch>.safetensors".
    signed = [v for v in voices if v.startswith(f"{name}.") and v.endswith(VOICE_SUFFIX)]
    if signed:
        return signed[0]
    if name:
        log.info("voice %r: not one of this server's voices, using the default", name)
    return ""


def synthesis_config(request: web.Request, service: TTSService
                     ) -> tuple[tts_pb2.SynthesisConfig, str]:
    """The query parameters as a synthesis config and the output format (InvalidInput for
    what cannot be read; the service validates the values)."""
    fmt = request.query.get("format", "OggOpus")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    sampling = SamplingParams()
    if (temperature := query_number(request, "temperature", float)) is not None:
        sampling.temperature = temperature
    if (top_k := query_number(request, "top_k", int)) is not None:
        sampling.top_k = top_k
    voice = voice_named(service, request.query.get("voice", ""))
    config = tts_pb2.SynthesisConfig(voice=voice, encoding=PCM_F32LE,
                                     text_sampling=sampling, audio_sampling=sampling)
    if (seed := query_seed(request)) is not None:
        config.seed = seed
    if (cfg_alpha := query_number(request, "cfg_alpha", float)) is not None:
        config.cfg_coef = cfg_alpha
    return config, fmt


class TtsStreaming:
    """The route, over ``service``'s sessions."""

    def __init__(self, service: TTSService):
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.handle)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        fmt = request.query.get("format", "OggOpus")

        async def send_error(ws: web.WebSocketResponse, message: str) -> None:
            # As moshi-server: an Error message in the MessagePack formats (and when the format
            # is unknown); a raw audio stream gets none, the close reason says it instead.
            if fmt.endswith("MessagePack") or fmt not in FORMATS:
                await ws.send_bytes(pack("Error", message=message))

        async def call(ws: web.WebSocketResponse) -> None:
            config, fmt = synthesis_config(request, self.service)
            writer = _Writer(fmt)
            session = self.service.open(config)
            for message in writer.start():
                await ws.send_bytes(message)

            async def write(chunk: SynthesisChunk | None) -> None:
                if chunk is not None:
                    for message in writer.messages(chunk):
                        await ws.send_bytes(message)

            await pump(ws, session, _read, write)

        return await serve_socket(request, PATH, send_error, call,
                                  session_slots(self.service.engine))


def _read(kind: WSMsgType, data) -> list:
    """A client message -> text chunks for the session, or END."""
    if kind == WSMsgType.TEXT:
        return [data + " "]  # a message ends a word, as moshi-server splits each one
    if data == b"\0":
        return [END]
    message = unpack(data, IN_TYPES)
    match message["type"]:
        case "Text":
            return [field(message, "text", str) + " "]
        case "Eos":
            return [END]
        case "Voice":
            raise InvalidInput("Voice embeddings are not supported here: name a voice with "
                               "the voice query parameter (see /api/voices)")
        case other:
            raise InvalidInput(f"unknown message type {other!r}; expected {IN_TYPES}")


class _Writer:
    """Synthesis chunks -> messages in the format asked for."""

    def __init__(self, fmt: str):
        self.msgpack = fmt.endswith("MessagePack")
        self.opus = sphn.OpusStreamWriter(SAMPLE_RATE) if fmt.startswith("OggOpus") else None
        self.word: tuple[str, float] | None = None  # the word told once it ends

    def start(self) -> list[bytes]:
        return [pack("Ready")] if self.msgpack else []

    def messages(self, chunk: SynthesisChunk) -> list[bytes]:
        out = []
        if self.msgpack:
            for word in chunk.words:
                out += self._end_word(word.start)
                self.word = (word.text, word.start)
        if len(chunk.audio):
            out += self._audio(chunk.audio)
        if chunk.done and self.msgpack:
            out += self._end_word(chunk.audio_seconds)
        return out

    def _end_word(self, stop: float) -> list[bytes]:
        if self.word is None:
            return []
        (text, start), self.word = self.word, None
        return [pack("Text", text=text, start_s=start, stop_s=stop)]

    def _audio(self, pcm: np.ndarray) -> list[bytes]:
        pcm = np.asarray(pcm, np.float32)
        if self.opus is not None:
            data = self.opus.append_pcm(pcm)
            if not data:
                return []
            return [pack("OggOpus", data=data)] if self.msgpack else [data]
        return [pack("Audio", pcm=pcm.tolist())] if self.msgpack else [pcm.astype("<f4").tobytes()]
