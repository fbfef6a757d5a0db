"""The Mimi service seen from a client: the same ``open_encoder`` / ``open_decoder`` sessions as
the in-process ``MimiService``, over a channel, plus whole-signal helpers for the CLI."""

from __future__ import annotations

import grpc
import numpy as np

from services.core.common_pb2 import PCM_F32LE, CodeFrame
from services.core.constants import SAMPLE_RATE
from services.core.engine import run_session
from services.core.grpc_client import RemoteStream, bearer_metadata
from services.core.pcm import encode_pcm
from services.mimi import mimi_pb2, mimi_pb2_grpc

INFO_TIMEOUT = 5.0  # seconds; GetInfo does no model work, so a slower answer means trouble


class RemoteMimi:
    def __init__(self, channel: grpc.Channel, token: str | None = None):
        self.channel, self.stub = channel, mimi_pb2_grpc.MimiStub(channel)
        self.metadata = bearer_metadata(token)

    def info(self) -> mimi_pb2.MimiInfo:
        return self.stub.GetInfo(mimi_pb2.GetInfoRequest(), metadata=self.metadata,
                                 timeout=INFO_TIMEOUT)

    def open_encoder(self, num_codebooks: int = 0, sample_rate: int = SAMPLE_RATE
                     ) -> RemoteStream:
        """Float32 chunks (any length, at ``sample_rate``) in, code frames [K] out."""
        config = mimi_pb2.EncodeConfig(encoding=PCM_F32LE, sample_rate_hertz=sample_rate,
                                       num_codebooks=num_codebooks)
        return RemoteStream(
            self.stub.StreamingEncode, mimi_pb2.StreamingEncodeRequest(config=config),
            lambda audio: mimi_pb2.StreamingEncodeRequest(audio=encode_pcm(audio, PCM_F32LE)),
            lambda response: np.asarray(response.frame.codes, dtype=np.int64),
            metadata=self.metadata)

    def open_decoder(self, num_codebooks: int) -> RemoteStream:
        """Code frames [K] in, 1920-sample float32 frames out."""
        config = mimi_pb2.DecodeConfig(num_codebooks=num_codebooks, encoding=PCM_F32LE)
        return RemoteStream(
            self.stub.StreamingDecode, mimi_pb2.StreamingDecodeRequest(config=config),
            lambda codes: mimi_pb2.StreamingDecodeRequest(frame=CodeFrame(codes=codes.tolist())),
            lambda response: np.frombuffer(response.audio, dtype="<f4"),
            metadata=self.metadata)

    def encode(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, num_codebooks: int = 0,
               chunk_seconds: float = 1.0) -> np.ndarray:
        """A whole signal -> codes [K, T], streamed (so any length fits the message limit)."""
        chunk = max(1, int(chunk_seconds * sample_rate))
        frames = run_session(self.open_encoder(num_codebooks, sample_rate),
                             (audio[start: start + chunk] for start in range(0, len(audio), chunk)))
        if not frames:
            return np.zeros((max(num_codebooks, 1), 0), dtype=np.int64)
        return np.stack(frames, axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [K, T] -> float32 samples [1920 T], streamed."""
        pcm = run_session(self.open_decoder(codes.shape[0]), codes.T)
        return np.concatenate(pcm) if pcm else np.zeros(0, dtype=np.float32)
