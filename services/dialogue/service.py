"""The dialogue gRPC service (protos/services/dialogue/dialogue.proto): the user's voice in,
Moshi's voice and text out, over a codec and an LM that are either in this process (their
services' engines) or remote (``RemoteMimi`` / ``RemoteLM``)."""

from __future__ import annotations

import logging

import numpy as np

from services.core import grpc_stream
from services.core.constants import FRAME_SIZE, SAMPLE_RATE
from services.core.engine import Engine, Unsupported, run_session
from services.core.pcm import FrameSplitter, check_encoding, encode_pcm
from services.core.validation import resolve_seed
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.mode import DialogueFrame, DialogueMode
from services.dialogue.pipeline import Codec, DialogueSession, LanguageModel
from services.moshi_lm import moshi_lm_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = dialogue_pb2.DESCRIPTOR.services_by_name["Dialogue"].full_name


class DialogueService(dialogue_pb2_grpc.DialogueServicer):
    name = SERVICE_NAME

    def __init__(self, codec: Codec, lm: LanguageModel, codec_where: str = "in-process",
                 lm_where: str = "in-process"):
        self.codec, self.lm = codec, lm
        self.codec_where, self.lm_where = codec_where, lm_where
        # A codec and an LM on one engine (in this process): a dialogue is one session of it.
        shared = getattr(codec, "engine", None)
        self._engine = shared if shared is not None and shared is getattr(lm, "engine", None) \
            else None

    def open(self, config: dialogue_pb2.DialogueConfig) -> DialogueSession:
        """A dialogue taking 1920-sample float32 frames of the user's voice at 24 kHz."""
        self.check_supported()
        # The seed is settled here (services.core.validation's policy), so that a remote LM
        # and an in-process one see the same config.
        generate = moshi_lm_pb2.GenerateConfig(
            text_sampling=config.text_sampling, audio_sampling=config.audio_sampling,
            seed=resolve_seed(config))
        if self._engine is None:
            return DialogueSession(self.codec, self.lm, generate)
        cfg = self.lm.cfg
        return self._engine.open(DialogueMode(self.lm.settings(generate),
                                              cfg.num_input_codebooks, cfg.dep_q,
                                              self.lm.pieces))

    def check_supported(self) -> None:
        info = self.lm.info()
        if not (info.num_output_codebooks and info.num_input_codebooks):
            raise Unsupported(f"the LM {info.model} does not both listen and speak (input "
                              f"codebooks {info.num_input_codebooks}, output codebooks "
                              f"{info.num_output_codebooks}): it cannot hold a dialogue")

    # ---- GrpcService -----------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        dialogue_pb2_grpc.add_DialogueServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        # In-process codec and LM are served (and counted) by their own services.
        return []

    def warm_up(self) -> None:
        try:
            self.check_supported()
        except Unsupported as error:  # every call will say so; nothing to warm up
            log.warning("%s", error)
            return
        frames = np.zeros((self.lm.info().max_delay + 2, FRAME_SIZE), dtype=np.float32)
        run_session(self.open(dialogue_pb2.DialogueConfig(seed=0)), frames)

    def close(self) -> None:
        """Nothing of its own: the codec and LM belong to their services or channels."""

    # ---- RPCs ------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        return dialogue_pb2.DialogueInfo(
            sample_rate_hertz=SAMPLE_RATE, frame_size=FRAME_SIZE,
            model_delay_frames=self.lm.info().max_delay, mimi=self.codec_where,
            lm=self.lm_where)

    async def Converse(self, request_iterator, context):
        splitter: FrameSplitter | None = None
        output_encoding = 0

        def open_session(config):
            nonlocal splitter, output_encoding
            splitter = FrameSplitter(config.input_encoding, config.input_sample_rate_hertz)
            output_encoding = check_encoding(config.output_encoding)
            return self.open(config)

        def respond(frame: DialogueFrame):
            return dialogue_pb2.ConverseResponse(
                frame_index=frame.index, audio=encode_pcm(frame.audio, output_encoding),
                text_token=frame.text_token, text=frame.text,
                audio_received_seconds=splitter.seconds_received)

        async for response in grpc_stream.serve_stream(
            request_iterator, context, open_session=open_session,
            to_inputs=lambda request: splitter.push(request.audio),
            flush_inputs=lambda: splitter.flush(), to_response=respond):
            yield response
