"""The ASR gRPC service (protos/services/asr/asr.proto): a thin adapter over recognition
sessions of an engine (``RecognitionMode`` on a Kyutai STT checkpoint's engine, or on a
Moshi-architecture LM's engine next to its dialogues)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.mode import ASREvent, Marker, RecognitionMode, final_words
from services.asr.timing import SttTiming
from services.core import aio, grpc_stream
from services.core.engine import Engine, Session, run_session
from services.core.grpc_stream import CLIENT_ERRORS, abort
from services.core.pcm import FrameSplitter
from services.core.validation import resolve_seed, sampling_params
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["SpeechRecognition"].full_name

# (sampling, interim results, pause probabilities) -> one session's mode
ModeFactory = Callable[[SamplingSettings, bool, bool], RecognitionMode]


class Recognition:
    """One call: its engine session and the framing of the client's audio around it."""

    def __init__(self, session: Session, mode: RecognitionMode, splitter: FrameSplitter):
        self.session, self.mode, self.splitter = session, mode, splitter
        # The silence prefix goes in front of the client's first frames (24 kHz zeros).
        self._prefix: np.ndarray | None = splitter.pad(mode.prefix_samples)

    def frames(self, audio: bytes) -> np.ndarray:
        frames = self.splitter.push(audio)
        if self._prefix is not None:
            frames, self._prefix = np.concatenate([self._prefix, frames]), None
        return frames

    def last_frames(self) -> np.ndarray:
        """At the end of input: the client's leftover samples and the flush silence, a partial
        last frame dropped (as a clip is framed)."""
        frames = self.frames(b"")
        return np.concatenate([frames,
                               self.splitter.flush_dropping_partial(self.mode.flush_samples)])


class ASRService(asr_pb2_grpc.SpeechRecognitionServicer):
    name = SERVICE_NAME

    def __init__(self, engine: Engine, cfg: LMConfig, model_name: str, make_mode: ModeFactory,
                 timing: SttTiming, pause_heads: int = 0):
        """``make_mode`` makes each session's mode; ``pause_heads``: pause-prediction heads
        the sessions use (0: no speech events or pause probabilities ever come)."""
        self.engine, self.cfg, self.model_name = engine, cfg, model_name
        self.make_mode, self.timing, self.pause_heads = make_mode, timing, pause_heads
        self.defaults = SamplingSettings.from_lm_gen_config(cfg.lm_gen_config)

    @classmethod
    def on_stt(cls, engine: Engine, cfg: LMConfig, decode: Callable[[Sequence[int]], str],
               model_name: str, timing: SttTiming | None = None) -> ASRService:
        """On a Kyutai STT checkpoint's engine (its codec in the same engine)."""
        timing = timing or SttTiming.from_config({"stt_config": cfg.stt_config})

        def make(sampling, interim, pauses):
            return RecognitionMode.for_stt(cfg, timing, decode, sampling, interim, pauses)

        return cls(engine, cfg, model_name, make, timing, cfg.extra_heads_num_heads)

    @classmethod
    def on_moshi(cls, engine: Engine, cfg: LMConfig, decode: Callable[[Sequence[int]], str],
                 model_name: str, text_delay_frames: int) -> ASRService:
        """On a Moshi-architecture LM's engine (shared with its dialogues), the text delayed
        ``text_delay_frames`` behind the audio; the engine's max_delay must allow it. The
        LM's text stream is the only output used: no speech events or pause probabilities."""
        def make(sampling, interim, pauses):
            return RecognitionMode.for_moshi(cfg, text_delay_frames, decode, sampling, interim)

        return cls(engine, cfg, model_name, make,
                   SttTiming.from_text_delay_frames(text_delay_frames))

    def open(self, config: asr_pb2.RecognitionConfig) -> Recognition:
        """A validated config as a recognition session (InvalidInput / PcmError say what is
        wrong, CapacityError when every slot is taken)."""
        d = self.defaults
        temperature, top_k = sampling_params(config.text_sampling, d.text_temperature,
                                             d.text_top_k, self.cfg.text_vocab, "text")
        splitter = FrameSplitter(config.encoding, config.sample_rate_hertz)
        sampling = SamplingSettings(temperature, top_k, seed=resolve_seed(config))
        mode = self.make_mode(sampling, config.interim_results, config.pause_probabilities)
        return Recognition(self.engine.open(mode), mode, splitter)

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        asr_pb2_grpc.add_SpeechRecognitionServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine]

    def warm_up(self) -> None:
        call = self.open(asr_pb2.RecognitionConfig(encoding=2, sample_rate_hertz=24000))
        run_session(call.session, [*call.frames(np.zeros(3840, np.float32).tobytes()),
                                   *call.last_frames()])

    def close(self) -> None:
        """Nothing of its own: the engine belongs to whoever built it."""

    # ---- RPCs -------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        return asr_pb2.RecognizerInfo(
            model=self.model_name, text_delay_seconds=self.timing.audio_delay_seconds,
            silence_prefix_seconds=self.timing.silence_prefix_seconds,
            pause_prediction=self.pause_heads > 0, num_pause_heads=self.pause_heads,
            max_sessions=self.engine.stepper.max_sessions)

    async def Recognize(self, request, context):
        try:
            call = self.open(request.config)
            frames = [*call.frames(request.audio), *call.last_frames()]
        except CLIENT_ERRORS as error:
            await abort(context, error)
        context.add_done_callback(lambda _: call.session.close())
        try:
            words = final_words(await aio.run_session(call.session, frames))
        except CLIENT_ERRORS as error:
            await abort(context, error)
        return asr_pb2.RecognizeResponse(
            words=[_word(w) for w in words], transcript=" ".join(w.text for w in words),
            audio_seconds=call.splitter.seconds_received)

    async def StreamingRecognize(self, request_iterator, context):
        calls: list[Recognition] = []

        def open_session(config):
            calls.append(self.open(config))
            return calls[0].session

        def to_inputs(request):
            if request.WhichOneof("request") == "marker":
                return [Marker(request.marker.id)]
            return list(calls[0].frames(request.audio))

        async for response in grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session, to_inputs=to_inputs,
            flush_inputs=lambda: list(calls[0].last_frames()), to_response=_response):
            yield response


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
