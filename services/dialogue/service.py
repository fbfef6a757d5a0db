"""The dialogue gRPC service (protos/services/dialogue/dialogue.proto): the user's voice in,
Moshi's voice and text out, over a codec and an LM that are either in this process (their
services' engines) or remote (``RemoteMimi`` / ``RemoteLM``).

A dialogue over a codec and an LM that are not one engine (the split pipeline) admits as many
dialogues as its backends do (the smaller of the LM's and the codec's max_sessions): beyond
that a call gets RESOURCE_EXHAUSTED at once, and the blocking calls of the ones admitted run
on a pool sized for them, so nothing queues silently. With remote backends the service is
``ready()`` only while each backend's health says SERVING: the server reports the dialogue
NOT_SERVING while its LM or codec server is down, and SERVING again once it is back.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.core import grpc_stream
from services.core.constants import FRAME_SIZE, SAMPLE_RATE
from services.core.engine import (
    CapacityError,
    Engine,
    EngineError,
    EngineStopped,
    Unsupported,
    run_session,
)
from services.core.grpc_client import engine_error
from services.core.pcm import FrameSplitter, check_encoding, encode_pcm
from services.core.validation import resolve_seed
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.mode import DialogueFrame, DialogueMode
from services.dialogue.pipeline import Codec, DialogueSession, LanguageModel
from services.mimi import mimi_pb2
from services.moshi_lm import moshi_lm_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = dialogue_pb2.DESCRIPTOR.services_by_name["Dialogue"].full_name
LM_SERVICE = moshi_lm_pb2.DESCRIPTOR.services_by_name["MoshiLM"].full_name
MIMI_SERVICE = mimi_pb2.DESCRIPTOR.services_by_name["Mimi"].full_name
PROBE_TIMEOUT = 1.0  # seconds a backend's health check may take before it counts as down
# Threads of the split pipeline per dialogue, on its pool: one waiting for the next frame, one
# handing over the user's audio while the encoder's queue is full.
THREADS_PER_DIALOGUE = 2


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
        # Remote clients (RemoteMimi, RemoteLM) have the channel their backend answers on.
        self._remote = [(part, name) for part, name in
                        ((codec, MIMI_SERVICE), (lm, LM_SERVICE))
                        if getattr(part, "channel", None) is not None]
        self._lock = threading.Lock()
        self._capacity: int | None = None  # split pipeline: dialogues admitted at once
        self._active = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self, config: dialogue_pb2.DialogueConfig) -> DialogueSession:
        """A dialogue taking 1920-sample float32 frames of the user's voice at 24 kHz."""
        self._check_known()
        self.check_supported()
        # The seed is settled here (services.core.validation's policy), so that a remote LM
        # and an in-process one see the same config.
        generate = moshi_lm_pb2.GenerateConfig(
            text_sampling=config.text_sampling, audio_sampling=config.audio_sampling,
            seed=resolve_seed(config))
        if self._engine is None:
            return self._open_split(generate)
        cfg = self.lm.cfg
        return self._engine.open(DialogueMode(self.lm.settings(generate),
                                              cfg.num_input_codebooks, cfg.dep_q,
                                              self.lm.pieces))

    def _open_split(self, generate: moshi_lm_pb2.GenerateConfig) -> DialogueSession:
        """A pipeline dialogue if one of the backends' slots is free, else CapacityError."""
        capacity, pool = self._split_capacity()
        with self._lock:
            if self._active >= capacity:
                raise CapacityError(f"all {capacity} dialogue slots are taken (the capacity "
                                    f"of its backends: {self._where()}); retry shortly")
            self._active += 1
        try:
            session = DialogueSession(self.codec, self.lm, generate, on_close=self._release)
        except BaseException:
            self._release()
            raise
        session.executor = pool
        return session

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def _split_capacity(self) -> tuple[int, concurrent.futures.ThreadPoolExecutor]:
        """(dialogues admitted at once, the pool their blocking calls run on), learnt from
        the backends (blocking for remote ones: never called on the event loop for them)."""
        # Asked outside the lock: a slow backend must not hold up _release on the event loop.
        capacity = self._capacity or min(_max_sessions(self.lm), _max_sessions(self.codec))
        with self._lock:
            self._capacity = self._capacity or capacity
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=THREADS_PER_DIALOGUE * self._capacity + 1,
                    thread_name_prefix="dialogue")
            return self._capacity, self._pool

    def _check_known(self) -> None:
        """EngineStopped (UNAVAILABLE) while remote backends have never answered: no blocking
        call to them is made on the server's event loop; warm_up or the readiness probe learn
        their shape once they answer."""
        if self._engine is None and self._capacity is None and self._remote:
            raise EngineStopped(f"the dialogue's backends ({self._where()}) have not answered "
                                "yet")

    def _where(self) -> str:
        return f"Mimi {self.codec_where}, LM {self.lm_where}"

    def ready(self) -> bool:
        """False while a remote backend's health is not SERVING (blocking: the server's
        readiness probe calls it on a thread of its own)."""
        for part, name in self._remote:
            if not _serving(part.channel, name):
                return False
        if self._engine is None and self._capacity is None:
            try:
                self._split_capacity()
            except EngineError:  # answered health but not GetInfo: still not ready
                return False
        return True

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
            if self._engine is None:
                self._split_capacity()
            self.check_supported()
        except Unsupported as error:  # every call will say so; nothing to warm up
            log.warning("%s", error)
            return
        except EngineError as error:  # a backend is down: health says so until it is back
            log.warning("cannot warm the dialogue up: %s", error)
            return
        frames = np.zeros((self.lm.info().max_delay + 2, FRAME_SIZE), dtype=np.float32)
        run_session(self.open(dialogue_pb2.DialogueConfig(seed=0)), frames)

    def close(self) -> None:
        """The pool of the split pipeline; the codec and LM belong to their services or
        channels."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- RPCs ------------------------------------------------------------------------------

    async def GetInfo(self, request, context):
        self._check_known()
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


def _max_sessions(part) -> int:
    """How many sessions a codec or LM (in-process service or remote client) admits."""
    engine = getattr(part, "engine", None)
    if engine is not None:
        return engine.stepper.max_sessions
    try:
        return part.info().max_sessions
    except grpc.RpcError as error:  # e.g. UNAVAILABLE: reported as the dialogue's own
        raise engine_error(error) from None


def _serving(channel: grpc.Channel, service: str) -> bool:
    """Whether the server behind ``channel`` reports ``service`` SERVING (health is open,
    so no token is needed)."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT)
    except grpc.RpcError:
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
