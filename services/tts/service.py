"""The TTS gRPC service (protos/services/tts/tts.proto): thin handlers over the TTS engine and a
codec (the Mimi service's decoder sessions)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch

from services.core import grpc_stream
from services.core.audio import StreamResampler
from services.core.constants import SAMPLE_RATE
from services.core.engine import Engine, InvalidInput
from services.core.grpc_stream import CLIENT_ERRORS, abort
from services.core.pcm import PcmError, check_encoding, check_sample_rate, encode_pcm
from services.core.validation import resolve_seed, sampling_params
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.conditioning import list_voices, load_voice, resolve_voice
from services.tts.delayed_audio import DelayedAudioTTS
from services.tts.generate import TTSGenerator, TTSRequest
from services.tts.lm_stream import LMSynthesisBackend
from services.tts.loading import TTSBundle
from services.tts.pipeline import Codec, SynthesisChunk, SynthesisSession
from services.tts.script import TextTokenizer
from services.tts.stepper import EngineBackend, tts_engine

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["SpeechSynthesis"].full_name
DEFAULT_CFG = 2.0


class TTSService(tts_pb2_grpc.SpeechSynthesisServicer):
    name = SERVICE_NAME

    def __init__(self, backend: EngineBackend | LMSynthesisBackend, codec: Codec,
                 voices_dir: str | os.PathLike | None = None,
                 default_voice: torch.Tensor | None = None):
        self.backend, self.codec, self.cfg = backend, codec, backend.cfg
        self.engine = backend.engine
        self.voices_dir, self.default_voice = voices_dir, default_voice
        self.defaults = SamplingSettings.from_lm_gen_config(self.cfg.lm_gen_config)
        self._voices: dict[str, torch.Tensor] = {}

    @classmethod
    def create(cls, bundle: TTSBundle, codec: Codec, max_sessions: int = 8,
               voices_dir: str | os.PathLike | None = None,
               default_voice: torch.Tensor | None = None, voice_length: int | None = None,
               idle_timeout: float = 30.0) -> TTSService:
        """On a Kyutai TTS model, with its own engine."""
        length = voice_length or (default_voice.shape[-1] if default_voice is not None else None)
        generator = TTSGenerator(bundle.model, bundle.tokenizer, max_sessions, length)
        engine = tts_engine(generator, max_sessions, idle_timeout)
        return cls(EngineBackend(generator, engine, bundle.name), codec, voices_dir,
                   default_voice)

    @classmethod
    def on_lm_engine(cls, engine: Engine, cfg: LMConfig, tokenizer: TextTokenizer,
                     codec: Codec, name: str, audio_delay_frames: int,
                     silence: np.ndarray) -> TTSService:
        """On a Moshi-architecture LM's engine (shared with its dialogue sessions), the audio
        delayed ``audio_delay_frames`` behind the forced text; ``silence``: codes of a silent
        frame for the user's streams. The engine's max_delay must allow the delay."""
        mode = DelayedAudioTTS(cfg, audio_delay_frames, silence)
        return cls(LMSynthesisBackend(engine, mode, tokenizer, name), codec)

    # ---- sessions ---------------------------------------------------------------------------

    def request(self, config: tts_pb2.SynthesisConfig) -> TTSRequest:
        """A validated config as a request (InvalidInput says what is wrong)."""
        d, cfg = self.defaults, self.cfg
        text = sampling_params(config.text_sampling, d.text_temperature, d.text_top_k,
                         cfg.text_vocab, "text")
        audio = sampling_params(config.audio_sampling, d.audio_temperature, d.audio_top_k, cfg.card,
                          "audio")
        seed = resolve_seed(config)
        cfg_coef = config.cfg_coef if config.HasField("cfg_coef") else DEFAULT_CFG
        allowed = self.backend.cfg_values
        if allowed is not None and f"{cfg_coef:.1f}" not in allowed:
            raise InvalidInput(f"cfg_coef must be one of {', '.join(allowed)}, got {cfg_coef}")
        n_q = config.num_codebooks or cfg.dep_q
        if not 1 <= n_q <= cfg.dep_q:
            raise InvalidInput(f"num_codebooks must be in 1..{cfg.dep_q} (0 = all), got {n_q}")
        if not math.isfinite(config.speed_bias) or abs(config.speed_bias) > 10:
            raise InvalidInput(f"speed_bias must be in [-10, 10], got {config.speed_bias}")
        voice = self._voice(config.voice) if self.backend.voice_conditioning or config.voice \
            else None
        request = TTSRequest(
            voices=(voice,), cfg_coef=cfg_coef,
            sampling=SamplingSettings(text[0], text[1], audio[0], audio[1], seed),
            num_codebooks=n_q, padding_bonus=config.speed_bias)
        try:
            self.backend.check(request)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
        return request

    def open(self, config: tts_pb2.SynthesisConfig, text: str = "",
             end_of_input: bool = False) -> SynthesisSession:
        request = self.request(config)
        return SynthesisSession(lambda inbox: self.backend.open_stream(request, inbox),
                                self.codec, request.num_codebooks, text, end_of_input)

    def _voice(self, name: str) -> torch.Tensor | None:
        if not name:
            if self.default_voice is None and self.cfg.extra.get("cross_attention"):
                raise InvalidInput("this model needs a voice (see ListVoices)")
            return self.default_voice
        if name not in self._voices:
            if self.voices_dir is None:
                raise InvalidInput(f"unknown voice {name!r}: the server has no voices folder")
            try:
                voice = load_voice(resolve_voice(self.voices_dir, name))
            except (FileNotFoundError, ValueError) as error:
                raise InvalidInput(str(error)) from None
            self._voices[name] = voice.to(self.backend.device)
        return self._voices[name]

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        tts_pb2_grpc.add_SpeechSynthesisServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine] if self.backend.owns_engine else []

    def warm_up(self) -> None:
        if self.default_voice is not None or not self.backend.voice_conditioning:
            self.open(tts_pb2.SynthesisConfig(), "warm up", end_of_input=True).close()

    def close(self) -> None:
        if self.backend.owns_engine:
            self.engine.stop()

    # ---- RPCs -------------------------------------------------------------------------------

    def GetInfo(self, request, context):
        return tts_pb2.SynthesizerInfo(
            model=self.backend.name, audio_delay_seconds=self.backend.audio_delay,
            max_codebooks=self.cfg.dep_q, max_sessions=self.engine.max_sessions,
            voice_conditioning=self.backend.voice_conditioning)

    def ListVoices(self, request, context):
        voices = list_voices(self.voices_dir) if self.voices_dir is not None else []
        return tts_pb2.ListVoicesResponse(voices=voices)

    def Synthesize(self, request, context):
        chunks = list(self._run(request, context))
        out = _merge(chunks)
        return tts_pb2.SynthesizeResponse(audio=out.audio, words=out.words,
                                          audio_seconds=chunks[-1].audio_seconds if chunks
                                          else 0.0)

    def SynthesizeOnline(self, request, context):
        yield from self._run(request, context)

    def StreamingSynthesize(self, request_iterator, context):
        opened: list[tuple[SynthesisSession, _ChunkWriter]] = []

        def open_session(config):
            writer = _ChunkWriter(config)
            opened.append((self.open(config), writer))
            return opened[0][0]

        def to_inputs(request):
            session = opened[0][0]
            kind = request.WhichOneof("request")
            try:
                if kind == "text":
                    session.push_text(request.text)
                elif kind == "end_of_input":
                    session.end_text()
                else:
                    raise InvalidInput("expected text or end_of_input after the config")
            except ValueError as error:  # text after the end of input
                raise InvalidInput(str(error)) from None
            return ()

        return grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session, to_inputs=to_inputs,
            to_response=lambda chunk: opened[0][1].chunk(chunk))

    def _run(self, request, context) -> Iterator[tts_pb2.SynthesisChunk]:
        try:
            if not request.text.strip():
                raise InvalidInput("the text is empty")
            writer = _ChunkWriter(request.config)
            session = self.open(request.config, request.text, end_of_input=True)
        except CLIENT_ERRORS as error:
            abort(context, error)
        context.add_callback(session.close)
        try:
            for chunk in session:
                yield writer.chunk(chunk)
        finally:
            session.close()


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

