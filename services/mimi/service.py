"""The Mimi gRPC service (protos/services/mimi/mimi.proto): thin handlers over an engine with
the codec (``services.core.tick``): its own, or the LM's, whose ticks then batch these streams
with the dialogue, recognition and synthesis sessions.

Streams go through the engine (one codec slot each); unary Encode/Decode run a batch call of
the model on the handler thread while holding a codec slot, so they count against the same
slots. Their work is bounded before it starts (``services.core.limits``): at most
``max_unary_audio_seconds`` of audio in or out, and a Decode reply that fits the message limit;
a stream's audio message at most ``max_chunk_seconds`` once resampled.
"""

from __future__ import annotations

import numpy as np
import torch

from services.core import grpc_stream
from services.core.aio import run_blocking
from services.core.audio import resample
from services.core.common_pb2 import CodeFrame
from services.core.constants import SAMPLE_RATE
from services.core.engine import Engine, InvalidInput, Session, run_session
from services.core.grpc_stream import check_codes
from services.core.limits import RequestLimits
from services.core.pcm import (
    FrameSplitter,
    check_encoding,
    check_sample_rate,
    decode_pcm,
    encode_pcm,
    sample_bytes,
)
from services.core.tick import speech_engine
from services.mimi import mimi_pb2, mimi_pb2_grpc
from services.mimi.mode import DecodeMode, EncodeMode
from services.mimi.model import MimiModel

SERVICE_NAME = mimi_pb2.DESCRIPTOR.services_by_name["Mimi"].full_name


class MimiService(mimi_pb2_grpc.MimiServicer):
    name = SERVICE_NAME

    def __init__(self, model: MimiModel, engine: Engine, limits: RequestLimits | None = None):
        """``engine``: a ``speech_engine`` holding ``model`` as its codec."""
        self.model, self.engine = model, engine
        self.limits = limits or RequestLimits()

    @classmethod
    def create(cls, model: MimiModel, max_sessions: int = 8, idle_timeout: float = 30.0,
               batch_window: float | None = 0.0, limits: RequestLimits | None = None
               ) -> MimiService:
        """On an engine of its own: ``max_sessions`` encoding plus ``max_sessions`` decoding
        streams (or unary calls); ``batch_window``: see ``Engine``."""
        return cls(model, speech_engine(max_sessions, codec=model, idle_timeout=idle_timeout,
                                        batch_window=batch_window), limits)

    # ---- in-process sessions (also used by the dialogue) -----------------------------------

    def check_num_codebooks(self, n: int, default: bool = True) -> int:
        if n == 0 and default:
            return self.model.num_codebooks
        if not 1 <= n <= self.model.cfg.max_codebooks:
            raise InvalidInput(f"num_codebooks must be in 1..{self.model.cfg.max_codebooks}"
                               f"{' (0 for the default)' if default else ''}, got {n}")
        return n

    def open_encoder(self, num_codebooks: int = 0) -> Session:
        """A session taking 1920-sample float32 frames and giving code frames [K]."""
        return self.engine.open(EncodeMode(self.check_num_codebooks(num_codebooks)))

    def open_decoder(self, num_codebooks: int) -> Session:
        """A session taking code frames [K] and giving 1920-sample float32 frames."""
        k = self.check_num_codebooks(num_codebooks, default=False)
        return self.engine.open(DecodeMode(k))

    # ---- GrpcService -----------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        mimi_pb2_grpc.add_MimiServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine]

    def warm_up(self) -> None:
        frames = np.zeros((2, self.model.frame_size), dtype=np.float32)
        codes = run_session(self.open_encoder(), frames)
        run_session(self.open_decoder(len(codes[0])), codes)

    def close(self) -> None:
        """Nothing of its own: the engine belongs to whoever built it (``close_all``)."""

    # ---- RPCs ------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        cfg = self.model.cfg
        return mimi_pb2.MimiInfo(
            model=self.model.name, sample_rate_hertz=cfg.sample_rate,
            frame_rate_hertz=cfg.frame_rate, frame_size=cfg.frame_size,
            cardinality=cfg.cardinality, max_codebooks=cfg.max_codebooks,
            default_codebooks=self.model.num_codebooks,
            max_sessions=self.engine.stepper.max_sessions)

    async def Encode(self, request, context):
        try:
            config = request.config
            k = self.check_num_codebooks(config.num_codebooks)
            encoding = check_encoding(config.encoding)
            rate = check_sample_rate(config.sample_rate_hertz)
            # The length at 24 kHz, before resampling: 1 MiB at 1 kHz is 524 s of audio.
            self._check_seconds(len(request.audio) / sample_bytes(encoding) / rate, "Encode")
            audio = resample(decode_pcm(request.audio, encoding), rate, SAMPLE_RATE)

            def encode():
                with self.engine.reserve(self.engine.stepper.encoder_slots), \
                        torch.inference_mode():
                    return self.model.encode(self._tensor(audio)[None, None], k)[0]

            codes = await run_blocking(encode)
        except grpc_stream.CLIENT_ERRORS as error:
            await grpc_stream.abort(context, error)
        return mimi_pb2.EncodeResponse(codes=_codes_message(codes.cpu().numpy()),
                                       num_samples=len(audio))

    async def Decode(self, request, context):
        try:
            encoding = check_encoding(request.encoding)
            codes = self._clip_codes(request.codes)
            length = codes.shape[1] * self.model.frame_size
            if not 0 <= request.num_samples <= length:
                raise InvalidInput(f"num_samples must be in 0..{length} (1920 per frame), "
                                   f"got {request.num_samples}")
            # Both bounds before any work: the codes' duration, and the reply's size.
            self._check_seconds(length / SAMPLE_RATE, "Decode")
            reply = (request.num_samples or length) * sample_bytes(encoding)
            if reply > self.limits.max_reply_audio_bytes:
                raise InvalidInput(
                    f"the decoded audio would be {reply} bytes, over the "
                    f"{self.limits.max_reply_audio_bytes}-byte reply limit: decode fewer "
                    "frames per call (PCM_S16LE halves the size) or use StreamingDecode")

            def decode():
                with self.engine.reserve(self.engine.stepper.decoder_slots), \
                        torch.inference_mode():
                    return self.model.decode(torch.from_numpy(codes)[None].to(self._device()))

            audio = await run_blocking(decode)
        except grpc_stream.CLIENT_ERRORS as error:
            await grpc_stream.abort(context, error)
        audio = audio[0, 0, : request.num_samples or length].float().cpu().numpy()
        return mimi_pb2.DecodeResponse(audio=encode_pcm(audio, encoding),
                                       sample_rate_hertz=SAMPLE_RATE, num_samples=len(audio))

    async def StreamingEncode(self, request_iterator, context):
        splitter: FrameSplitter | None = None
        frames_out = 0

        def open_session(config):
            nonlocal splitter
            splitter = FrameSplitter(config.encoding, config.sample_rate_hertz,
                                     max_chunk_seconds=self.limits.max_chunk_seconds)
            return self.open_encoder(config.num_codebooks)

        def respond(codes: np.ndarray):
            nonlocal frames_out
            frames_out += 1
            return mimi_pb2.StreamingEncodeResponse(
                frame_index=frames_out - 1, frame=CodeFrame(codes=codes.tolist()),
                audio_received_seconds=splitter.seconds_received)

        async for response in grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session,
            to_inputs=lambda request: splitter.push(request.audio),
            flush_inputs=lambda: splitter.flush(), to_response=respond):
            yield response

    async def StreamingDecode(self, request_iterator, context):
        config = None
        frames_out = 0

        def open_session(c):
            nonlocal config
            config = c
            check_encoding(c.encoding)
            return self.open_decoder(c.num_codebooks)

        def to_inputs(request):
            codes = np.asarray(request.frame.codes, dtype=np.int64)
            return [check_codes(codes, config.num_codebooks, self.model.cfg.cardinality)]

        def respond(audio: np.ndarray):
            nonlocal frames_out
            frames_out += 1
            return mimi_pb2.StreamingDecodeResponse(frame_index=frames_out - 1,
                                                    audio=encode_pcm(audio, config.encoding))

        async for response in grpc_stream.serve_stream(
                request_iterator, context, open_session=open_session, to_inputs=to_inputs,
                to_response=respond):
            yield response

    # ---- helpers ---------------------------------------------------------------------------

    def _check_seconds(self, seconds: float, what: str) -> None:
        limit = self.limits.max_unary_audio_seconds
        if seconds > limit:
            raise InvalidInput(f"{what} takes at most {limit:g} s of audio per call, got "
                               f"{seconds:.1f} s: split it, or stream it")

    def _clip_codes(self, message: mimi_pb2.Codes) -> np.ndarray:
        k, t = message.num_codebooks, message.num_frames
        self.check_num_codebooks(k, default=False)
        if t < 0 or len(message.codes) != k * t:
            raise InvalidInput(f"codes holds {len(message.codes)} values, expected "
                               f"num_codebooks * num_frames = {k} * {t}")
        codes = np.asarray(message.codes, dtype=np.int64).reshape(k, t)
        return check_codes(codes, k, self.model.cfg.cardinality)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tensor(self, audio: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(audio).to(self._device())


def _codes_message(codes: np.ndarray) -> mimi_pb2.Codes:
    k, t = codes.shape
    return mimi_pb2.Codes(num_codebooks=k, num_frames=t, codes=codes.reshape(-1).tolist())

