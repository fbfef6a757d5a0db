"""The TTS gRPC service (protos/services/tts/tts.proto): a thin adapter over synthesis
sessions of an engine (``SynthesisMode`` on a Kyutai TTS checkpoint's engine, or on a
Moshi-architecture LM's engine next to its dialogues); the codec decodes in the same tick.

The request limits (``services.core.limits``: text length, breaks, voices) are applied by
``request`` / ``open`` and by the sessions themselves, so every protocol over this service
(gRPC here, other adapters over ``open``) gets them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable

import torch

from services.core import grpc_stream
from services.core.aio import AsyncSession
from services.core.audio import StreamResampler
from services.core.constants import FRAME_RATE, SAMPLE_RATE
from services.core.engine import Engine, InvalidInput, Session, run_session
from services.core.grpc_stream import CLIENT_ERRORS, abort
from services.core.limits import RequestLimits
from services.core.pcm import PcmError, check_encoding, check_sample_rate, encode_pcm
from services.core.validation import (
    EMPTY_TEXT,
    check_range,
    check_text,
    resolve_seed,
    sampling_params,
)
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.conditioning import list_voices
from services.tts.mode import SynthesisChunk, SynthesisMode, TTSRequest, check_request
from services.tts.script import WordEncoder
from services.tts.voices import VoiceCache

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["SpeechSynthesis"].full_name
DEFAULT_CFG = 2.0
MAX_CFG_COEF = 10.0  # classifier-free guidance this strong only distorts: a client's mistake


class TTSService(tts_pb2_grpc.SpeechSynthesisServicer):
    name = SERVICE_NAME

    def __init__(self, engine: Engine, cfg: LMConfig, model_name: str,
                 make_mode: Callable[[TTSRequest], SynthesisMode],
                 check: Callable[[TTSRequest], None], audio_delay: float,
                 voice_conditioning: bool = False, cfg_values: list[str] | None = None,
                 voices_dir: str | os.PathLike | None = None,
                 default_voice: torch.Tensor | None = None,
                 limits: RequestLimits | None = None):
        """``make_mode`` makes each session's mode from its checked request (``check`` raises
        ValueError); ``cfg_values``: the cfg_coef values the model takes (None: any)."""
        self.engine, self.cfg, self.model_name = engine, cfg, model_name
        self.make_mode, self.check = make_mode, check
        self.audio_delay, self.voice_conditioning = audio_delay, voice_conditioning
        self.cfg_values = cfg_values
        self.voices_dir, self.default_voice = voices_dir, default_voice
        self.defaults = SamplingSettings.from_lm_gen_config(cfg.lm_gen_config)
        self.limits = limits or RequestLimits()
        self.voices = None if voices_dir is None else VoiceCache(
            voices_dir, engine.stepper.device, self.limits.voice_cache_size)

    @classmethod
    def on_tts(cls, engine: Engine, model, tokenizer: WordEncoder, model_name: str,
               voice_length: int | None, voices_dir: str | os.PathLike | None = None,
               default_voice: torch.Tensor | None = None,
               limits: RequestLimits | None = None) -> TTSService:
        """On a Kyutai TTS checkpoint's engine (``model`` a TTSModel; the engine's state
        sized for voices of ``voice_length``)."""
        provider = getattr(model, "condition_provider", None)
        lut = provider.conditioners["cfg"] if provider is not None \
            and "cfg" in provider.conditioners else None
        return cls(engine, model.cfg, model_name,
                   lambda request: SynthesisMode.for_tts(model, tokenizer, request),
                   lambda request: check_request(model, request, voice_length),
                   model.tts_config.audio_delay, bool(model.cfg.extra.get("cross_attention")),
                   None if lut is None else lut.possible_values, voices_dir, default_voice,
                   limits)

    @classmethod
    def on_moshi(cls, engine: Engine, cfg: LMConfig, tokenizer: WordEncoder,
                 model_name: str, audio_delay_frames: int,
                 limits: RequestLimits | None = None) -> TTSService:
        """On a Moshi-architecture LM's engine (shared with its dialogues), the audio delayed
        ``audio_delay_frames`` behind the forced text; the engine's max_delay must allow it.
        No voice, no cfg condition, no speed bias."""
        def check(request: TTSRequest) -> None:
            if any(v is not None for v in request.voices):
                raise ValueError("this model takes no voice")

        def make(request: TTSRequest) -> SynthesisMode:
            return SynthesisMode.for_moshi(cfg, tokenizer, audio_delay_frames, request.sampling,
                                           request.num_codebooks, limits=request.limits)

        return cls(engine, cfg, model_name, make, check, audio_delay_frames / FRAME_RATE,
                   limits=limits)

    # ---- sessions ---------------------------------------------------------------------------

    def request(self, config: tts_pb2.SynthesisConfig) -> TTSRequest:
        """A validated config as a request (InvalidInput says what is wrong)."""
        d, cfg = self.defaults, self.cfg
        text = sampling_params(config.text_sampling, d.text_temperature, d.text_top_k,
                               cfg.text_vocab, "text")
        audio = sampling_params(config.audio_sampling, d.audio_temperature, d.audio_top_k,
                                cfg.card, "audio")
        cfg_coef = check_range("cfg_coef", config.cfg_coef, 0, MAX_CFG_COEF) \
            if config.HasField("cfg_coef") else DEFAULT_CFG
        if self.cfg_values is not None and f"{cfg_coef:.1f}" not in self.cfg_values:
            raise InvalidInput(f"cfg_coef must be one of {', '.join(self.cfg_values)}, "
                               f"got {cfg_coef}")
        n_q = config.num_codebooks or cfg.dep_q
        if not 1 <= n_q <= cfg.dep_q:
            raise InvalidInput(f"num_codebooks must be in 1..{cfg.dep_q} (0 = all), got {n_q}")
        check_range("speed_bias", config.speed_bias, -10, 10)
        request = TTSRequest(
            cfg_coef=cfg_coef,
            sampling=SamplingSettings(text[0], text[1], audio[0], audio[1],
                                      resolve_seed(config)),
            num_codebooks=n_q, padding_bonus=config.speed_bias, limits=self.limits)
        loaded = None
        if config.voice:
            loaded = self._voice(config.voice)
            request = dataclasses.replace(request, voices=(loaded[1],))
        elif self.voice_conditioning:
            if self.default_voice is None:
                raise InvalidInput("this model needs a voice (see ListVoices)")
            request = dataclasses.replace(request, voices=(self.default_voice,))
        else:
            request = dataclasses.replace(request, voices=(None,))
        try:
            self.check(request)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
        if loaded is not None:
            self.voices.keep(*loaded)  # only a voice the model accepted is kept
        return request

    def open(self, config: tts_pb2.SynthesisConfig) -> Session:
        """A synthesis session: send text chunks (``str``), then ``finish``; it gives
        ``SynthesisChunk``s (and None for steps with nothing to tell)."""
        return self.engine.open(self.make_mode(self.request(config)))

    def _voice(self, name: str) -> tuple[tuple, torch.Tensor]:
        """(cache key, voice) of a voice named by the client."""
        if self.voices is None:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise InvalidInput(f"unknown voice {shown!r}: the server has no voices folder")
        return self.voices.lookup(name)

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        tts_pb2_grpc.add_SpeechSynthesisServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine]

    def warm_up(self) -> None:
        if self.default_voice is not None or not self.voice_conditioning:
            run_text(self.open(tts_pb2.SynthesisConfig()), "warm up")

    def close(self) -> None:
        """Nothing of its own: the engine belongs to whoever built it."""

    # ---- RPCs -------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        return tts_pb2.SynthesizerInfo(
            model=self.model_name, audio_delay_seconds=self.audio_delay,
            max_codebooks=self.cfg.dep_q, max_sessions=self.engine.stepper.max_sessions,
            voice_conditioning=self.voice_conditioning)

    async def ListVoices(self, request, context):
        voices = list_voices(self.voices_dir) if self.voices_dir is not None else []
        return tts_pb2.ListVoicesResponse(voices=voices)

    async def Synthesize(self, request, context):
        chunks, size = [], 0
        async with contextlib.aclosing(self._run(request, context)) as run:
            async for chunk in run:
                size += len(chunk.audio)
                if size > self.limits.max_reply_audio_bytes:  # stop now, not at the send
                    await abort(context, InvalidInput(
                        f"the audio of this text passes the {self.limits.max_reply_audio_bytes}"
                        f"-byte reply limit after {chunk.audio_seconds:.0f} s: use "
                        "SynthesizeOnline or StreamingSynthesize for long texts"))
                chunks.append(chunk)
        out = _merge(chunks)
        return tts_pb2.SynthesizeResponse(audio=out.audio, words=out.words,
                                          audio_seconds=chunks[-1].audio_seconds if chunks
                                          else 0.0)

    async def SynthesizeOnline(self, request, context):
        async for chunk in self._run(request, context):
            yield chunk

    async def StreamingSynthesize(self, request_iterator, context):
        writers: list[_ChunkWriter] = []
        sessions: list[Session] = []

        def open_session(config):
            writers.append(_ChunkWriter(config))
            sessions.append(self.open(config))
            return sessions[0]

        spoken = False  # whether any text chunk so far had more than white space

        def check_spoken() -> None:  # the rule of Synthesize, for the whole streamed text
            if not spoken:
                raise InvalidInput(EMPTY_TEXT)

        def to_inputs(request):
            nonlocal spoken
            kind = request.WhichOneof("request")
            if kind == "text":
                spoken = spoken or bool(request.text.strip())
                return [request.text]
            if kind == "end_of_input":  # the client may keep the stream open to read
                check_spoken()
                sessions[0].finish()
                return []
            raise InvalidInput("expected text or end_of_input after the config")

        def flush_inputs():
            check_spoken()
            return ()

        async for response in grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session, to_inputs=to_inputs,
            flush_inputs=flush_inputs,
            to_response=lambda chunk: None if chunk is None else writers[0].chunk(chunk)):
            yield response

    async def _run(self, request, context) -> AsyncIterator[tts_pb2.SynthesisChunk]:
        try:
            check_text(request.text)
            writer = _ChunkWriter(request.config)
            session = self.open(request.config)
        except CLIENT_ERRORS as error:
            await abort(context, error)
        context.add_done_callback(lambda _: session.close())
        stream = AsyncSession(session)
        try:
            await stream.send(request.text)
            stream.finish()
            async for chunk in stream:
                if chunk is not None:
                    yield writer.chunk(chunk)
        except CLIENT_ERRORS as error:
            await abort(context, error)
        finally:
            session.close()


def run_text(session: Session, text: str) -> list[SynthesisChunk]:
    """The chunks of ``text`` synthesized on ``session`` (closed at the end), from a thread."""
    return [c for c in run_session(session, [text]) if c is not None]


class _ChunkWriter:
    """Model chunks -> response chunks in the client's encoding and sample rate."""

    def __init__(self, config: tts_pb2.SynthesisConfig):
        try:
            self.encoding = check_encoding(config.encoding)
            rate = config.sample_rate_hertz or SAMPLE_RATE
            self.resampler = StreamResampler(SAMPLE_RATE, check_sample_rate(rate))
        except PcmError as error:
            raise InvalidInput(str(error)) from None

    def chunk(self, chunk: SynthesisChunk) -> tts_pb2.SynthesisChunk:
        audio = self.resampler.process(chunk.audio, last=chunk.done)
        words = [tts_pb2.WordTiming(text=w.text, start_seconds=w.start) for w in chunk.words]
        return tts_pb2.SynthesisChunk(audio=encode_pcm(audio, self.encoding), words=words,
                                      waiting_for_text=chunk.waiting_for_text,
                                      audio_seconds=chunk.audio_seconds)


def _merge(chunks: list[tts_pb2.SynthesisChunk]) -> tts_pb2.SynthesisChunk:
    return tts_pb2.SynthesisChunk(audio=b"".join(c.audio for c in chunks),
                                  words=[w for c in chunks for w in c.words])

