"""The Moshi LM gRPC service (protos/services/moshi_lm/moshi_lm.proto): thin handlers over the
LM engine, plus the in-process ``open_generation`` the dialogue uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.core import grpc_stream
from services.core.common_pb2 import CodeFrame, SamplingParams
from services.core.engine import Engine, Session, run_session
from services.core.grpc_stream import check_codes
from services.core.tick import speech_engine
from services.core.validation import resolve_seed, sampling_params
from services.moshi_lm import moshi_lm_pb2, moshi_lm_pb2_grpc
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.mode import GenerationMode, LMFrame

SERVICE_NAME = moshi_lm_pb2.DESCRIPTOR.services_by_name["MoshiLM"].full_name


class MoshiLMService(moshi_lm_pb2_grpc.MoshiLMServicer):
    name = SERVICE_NAME

    def __init__(self, generator: LMGenerator, engine: Engine, model_name: str,
                 pieces: Sequence[str] | None = None):
        """``engine``: a ``speech_engine`` of ``generator``; ``pieces[token]``: the display
        text of each text token."""
        self.generator, self.cfg, self.engine = generator, generator.cfg, engine
        self.model_name, self.pieces = model_name, pieces
        self.defaults = SamplingSettings.from_lm_gen_config(self.cfg.lm_gen_config)

    @classmethod
    def create(cls, generator: LMGenerator, model_name: str, max_sessions: int = 8,
               pieces: Sequence[str] | None = None, idle_timeout: float = 30.0,
               batch_window: float | None = 0.0, max_delay: int | None = None
               ) -> MoshiLMService:
        """On an engine of its own (no codec). ``max_delay``: the largest delay any session
        of the engine may bring (default: the checkpoint's)."""
        engine = speech_engine(max_sessions, generator, max_delay=max_delay,
                               idle_timeout=idle_timeout, batch_window=batch_window)
        return cls(generator, engine, model_name, pieces)

    # ---- in-process sessions (also used by the dialogue) -----------------------------------

    def info(self) -> moshi_lm_pb2.LMInfo:
        cfg, d = self.cfg, self.defaults
        return moshi_lm_pb2.LMInfo(
            model=self.model_name, text_cardinality=cfg.text_vocab, audio_cardinality=cfg.card,
            num_input_codebooks=cfg.num_input_codebooks, num_output_codebooks=cfg.dep_q,
            delays=list(cfg.delays), max_delay=cfg.max_delay, context=cfg.context,
            max_sessions=self.engine.stepper.max_sessions,
            default_text_sampling=SamplingParams(temperature=d.text_temperature,
                                                 top_k=d.text_top_k),
            default_audio_sampling=SamplingParams(temperature=d.audio_temperature,
                                                  top_k=d.audio_top_k))

    def settings(self, config: moshi_lm_pb2.GenerateConfig) -> SamplingSettings:
        """A validated GenerateConfig as the generator's settings; unset fields: defaults."""
        d = self.defaults
        text = sampling_params(config.text_sampling, d.text_temperature, d.text_top_k,
                         self.cfg.text_vocab, "text")
        audio = sampling_params(config.audio_sampling, d.audio_temperature, d.audio_top_k,
                          self.cfg.card, "audio")
        seed = resolve_seed(config)
        return SamplingSettings(text_temperature=text[0], text_top_k=text[1],
                                audio_temperature=audio[0], audio_top_k=audio[1], seed=seed)

    def open_generation(self, config: moshi_lm_pb2.GenerateConfig) -> Session:
        """A session taking the user's code frames [num_input_codebooks] and giving an LMFrame
        per step (None for the first max_delay steps)."""
        return self.engine.open(GenerationMode(self.settings(config), pieces=self.pieces))

    def check_user_frame(self, codes: np.ndarray) -> np.ndarray:
        return check_codes(codes, self.cfg.num_input_codebooks, self.cfg.card)

    # ---- GrpcService -----------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        moshi_lm_pb2_grpc.add_MoshiLMServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return [self.engine]

    def warm_up(self) -> None:
        frames = np.zeros((self.cfg.max_delay + 2, self.cfg.num_input_codebooks), np.int64)
        run_session(self.open_generation(moshi_lm_pb2.GenerateConfig(seed=0)), frames)

    def close(self) -> None:
        """Nothing of its own: the engine belongs to whoever built it (``close_all``)."""

    # ---- RPCs ------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        return self.info()

    async def Generate(self, request_iterator, context):
        frames_out = 0

        def respond(frame: LMFrame | None):
            nonlocal frames_out
            if frame is None:  # inside the model's delay
                return None
            frames_out += 1
            return moshi_lm_pb2.GenerateResponse(
                frame_index=frames_out - 1, text_token=frame.text_token, text=frame.text,
                audio=CodeFrame(codes=frame.audio.tolist()))

        async for response in grpc_stream.serve_stream(
            request_iterator, context, open_session=self.open_generation,
            to_inputs=lambda request: [self.check_user_frame(
                np.asarray(request.user_frame.codes, dtype=np.int64))],
            to_response=respond):
            yield response
