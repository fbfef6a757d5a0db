"""The Moshi LM service seen from a client: ``info`` and ``open_generation`` like the in-process
``MoshiLMService``, over a channel."""

from __future__ import annotations

import grpc
import numpy as np

from services.core.common_pb2 import CodeFrame
from services.core.grpc_client import RemoteStream, bearer_metadata, engine_error
from services.moshi_lm import moshi_lm_pb2, moshi_lm_pb2_grpc
from services.moshi_lm.mode import LMFrame

INFO_TIMEOUT = 5.0  # seconds; GetInfo does no model work, so a slower answer means trouble


class RemoteLM:
    def __init__(self, channel: grpc.Channel, token: str | None = None):
        self.channel, self.stub = channel, moshi_lm_pb2_grpc.MoshiLMStub(channel)
        self.metadata = bearer_metadata(token)
        self._info: moshi_lm_pb2.LMInfo | None = None

    def info(self) -> moshi_lm_pb2.LMInfo:
        if self._info is None:  # fixed for the server's lifetime
            try:
                self._info = self.stub.GetInfo(moshi_lm_pb2.GetInfoRequest(),
                                               metadata=self.metadata, timeout=INFO_TIMEOUT)
            except grpc.RpcError as error:  # e.g. UNAVAILABLE: reported as the dialogue's own
                raise engine_error(error) from None
        return self._info

    def open_generation(self, config: moshi_lm_pb2.GenerateConfig) -> RemoteStream:
        """User code frames [K] in, an LMFrame per step past the model's delay out."""
        return RemoteStream(
            self.stub.Generate, moshi_lm_pb2.GenerateRequest(config=config),
            lambda codes: moshi_lm_pb2.GenerateRequest(user_frame=CodeFrame(
                codes=np.asarray(codes).tolist())),
            lambda r: LMFrame(r.text_token, r.text, np.asarray(r.audio.codes, dtype=np.int64)),
            metadata=self.metadata)
