"""The ASR gRPC service (protos/services/asr/asr.proto): thin handlers over the ASR engine and a
codec (the Mimi service's encoder sessions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.delayed_text import DelayedTextASR
from services.asr.lm_stream import LMRecognitionStream
from services.asr.pipeline import ASREvent, Codec, RecognitionSession
from services.asr.recognizer import Recognizer
from services.asr.stepper import ASRStream, Marker, asr_engine
from services.asr.timing import SttTiming
from services.core import grpc_stream
from services.core.constants import SAMPLE_RATE
from services.core.engine import Engine, run_session
from services.core.grpc_stream import CLIENT_ERRORS, abort
from services.core.pcm import FrameSplitter, encode_pcm
from services.core.validation import resolve_seed, sampling_params
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.model import LMModel

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["SpeechRecognition"].full_name


class ASRService(asr_pb2_grpc.SpeechRecognitionServicer):
    name = SERVICE_NAME

    def __init__(self, engine: Engine, codec: Codec, model_name: str, cfg: LMConfig,
                 timing: SttTiming, num_codebooks: int,
                 open_stream: Callable[[SamplingSettings], Any], owns_engine: bool = True,
                 pause_heads: int = 0):
        """``open_stream(settings)`` opens a stream of code frames [num_codebooks] ->
        ASRTicks on ``engine``; ``pause_heads``: pause-prediction heads the streams use
        (0: no speech events or pause probabilities ever come)."""
        self.engine, self.codec, self.model_name, self.cfg = engine, codec, model_name, cfg
        self.timing, self.num_codebooks, self.pause_heads = timing, num_codebooks, pause_heads
        self._open_stream, self._owns_engine = open_stream, owns_engine
        self.defaults = SamplingSettings.from_lm_gen_config(cfg.lm_gen_config)

    @classmethod
    def create(cls, model: LMModel, decode: Callable[[Sequence[int]], str], codec: Codec,
               model_name: str, max_sessions: int = 8, timing: SttTiming | None = None,
               idle_timeout: float = 30.0) -> ASRService:
        """On a Kyutai STT model (dep_q = 0), with its own engine."""
        recognizer = Recognizer(model, decode, max_sessions, timing)
        engine = asr_engine(recognizer, max_sessions, idle_timeout)
        return cls(engine, codec, model_name, model.cfg, recognizer.timing,
                   recognizer.num_codebooks, lambda s: engine.open(ASRStream(s)),
                   pause_heads=model.cfg.extra_heads_num_heads)

    @classmethod
    def on_lm_engine(cls, engine: Engine, cfg: LMConfig,
                     decode: Callable[[Sequence[int]], str], codec: Codec, model_name: str,
                     text_delay_frames: int, silence: np.ndarray) -> ASRService:
        """On a Moshi-architecture LM's engine (shared with its dialogue sessions), the text
        delayed ``text_delay_frames`` behind the audio; ``silence``: codes of a silent frame
        for the user's streams. The engine's max_delay must allow the delay. The LM's text
        stream is the only output used: no speech events or pause probabilities."""
        mode = DelayedTextASR(cfg, text_delay_frames, silence)
        return cls(engine, codec, model_name, cfg,
                   SttTiming.from_text_delay_frames(text_delay_frames), cfg.dep_q,
                   lambda s: LMRecognitionStream(engine, mode, s, decode), owns_engine=False)

    def open(self, config: asr_pb2.RecognitionConfig) -> tuple[RecognitionSession,
                                                               FrameSplitter]:
        """A session and the splitter of the client's audio, the silence prefix already in."""
        d = self.defaults
        temperature, top_k = sampling_params(config.text_sampling, d.text_temperature, d.text_top_k,
                                       self.cfg.text_vocab, "text")
        seed = resolve_seed(config)
        splitter = FrameSplitter(config.encoding, config.sample_rate_hertz)
        sampling = SamplingSettings(temperature, top_k, seed=seed)
        session = RecognitionSession(self._open_stream(sampling), self.codec,
                                     self.num_codebooks, self.timing, config.interim_results,
                                     config.pause_probabilities)
        for frame in _silence(splitter, self.timing.silence_prefix_seconds):
            session.send(frame)
        splitter.samples_received = 0  # the prefix is not the client's audio
        session.audio_seconds = lambda: splitter.seconds_received  # words end inside it
        return session, splitter

    def end_frames(self, splitter: FrameSplitter) -> list[np.ndarray]:
        """The last frames of a stream: the client's leftover samples followed by the flush
        silence, a partial last frame dropped (as the reference frames a clip)."""
        received = splitter.samples_received  # the flush is not the client's audio
        frames = list(_silence(splitter, self.timing.flush_samples / SAMPLE_RATE))
        splitter.samples_received = received
        return frames

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        asr_pb2_grpc.add_SpeechRecognitionServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine] if self._owns_engine else []

    def warm_up(self) -> None:
        session, _ = self.open(asr_pb2.RecognitionConfig(encoding=2, sample_rate_hertz=24000))
        run_session(session, np.zeros((2, 1920), np.float32))

    def close(self) -> None:
        if self._owns_engine:
            self.engine.stop()

    # ---- RPCs -------------------------------------------------------------------------------

    def GetInfo(self, request, context):
        return asr_pb2.RecognizerInfo(
            model=self.model_name, text_delay_seconds=self.timing.audio_delay_seconds,
            silence_prefix_seconds=self.timing.silence_prefix_seconds,
            pause_prediction=self.pause_heads > 0, num_pause_heads=self.pause_heads,
            max_sessions=self.engine.max_sessions)

    def Recognize(self, request, context):
        try:
            session, splitter = self.open(request.config)
            frames = list(splitter.push(request.audio)) + self.end_frames(splitter)
        except CLIENT_ERRORS as error:
            abort(context, error)
        context.add_callback(session.close)
        words = [e.word for e in run_session(session, frames)
                 if e.word is not None and e.word.is_final]
        return asr_pb2.RecognizeResponse(
            words=[_word(w) for w in words], transcript=" ".join(w.text for w in words),
            audio_seconds=splitter.seconds_received)

    def StreamingRecognize(self, request_iterator, context):
        opened: list[tuple[RecognitionSession, FrameSplitter]] = []

        def open_session(config):
            opened.append(self.open(config))
            return opened[0][0]

        def to_inputs(request):
            if request.WhichOneof("request") == "marker":
                return [Marker(request.marker.id)]
            return list(opened[0][1].push(request.audio))

        return grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session, to_inputs=to_inputs,
            flush_inputs=lambda: self.end_frames(opened[0][1]), to_response=_response)


def _silence(splitter: FrameSplitter, seconds: float) -> np.ndarray:
    """Frames completed by ``seconds`` of silence pushed in the client's own format."""
    zeros = np.zeros(round(seconds * splitter.sample_rate), np.float32)
    return splitter.push(encode_pcm(zeros, splitter.encoding))


def _word(word) -> asr_pb2.Word:
    message = asr_pb2.Word(text=word.text, start_seconds=word.start)
    if word.end is not None:
        message.end_seconds = word.end
    return message


def _response(event: ASREvent) -> asr_pb2.StreamingRecognizeResponse:
    response = asr_pb2.StreamingRecognizeResponse(audio_processed_seconds=event.audio_processed)
    if event.word is not None:
        response.word.CopyFrom(_word(event.word))
    elif event.speech_started is not None:
        response.speech_event.CopyFrom(asr_pb2.SpeechEvent(
            kind=asr_pb2.SpeechEvent.SPEECH_STARTED, time_seconds=event.speech_started))
    elif event.end_of_turn is not None:
        response.speech_event.CopyFrom(asr_pb2.SpeechEvent(
            kind=asr_pb2.SpeechEvent.END_OF_TURN, time_seconds=event.end_of_turn))
    elif event.pauses is not None:
        response.pause.probabilities.extend(event.pauses)
    else:
        response.marker.id = event.marker
    return response
