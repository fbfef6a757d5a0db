"""A dialogue over a codec and an LM that are not one engine (``--mimi-address`` /
``--lm-address``): three streams chained, Mimi encoder -> Moshi LM -> Mimi decoder. (When
both are in this process the dialogue is one session of their shared engine instead:
``services.dialogue.mode``.)

    user frames --send--> encoder ==codes==> [pump thread] --> LM ==Moshi's frames==> decoder
                                                                     (consumer thread)  |
    DialogueFrame(index, 1920 samples, text) <-- iteration ------------------------------+

Each stream is anything with the engine-session interface: an in-process engine session
(``MimiService.open_encoder``, ``MoshiLMService.open_generation``) or a remote gRPC stream
(``RemoteMimi``, ``RemoteLM``). So the same code runs in one process or against separately
running Mimi and LM servers, and both give the same frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from services.core.engine import EngineError
from services.dialogue.mode import DialogueFrame
from services.moshi_lm import moshi_lm_pb2


class Codec(Protocol):
    def open_encoder(self, num_codebooks: int) -> Any: ...

    def open_decoder(self, num_codebooks: int) -> Any: ...


class LanguageModel(Protocol):
    def info(self) -> moshi_lm_pb2.LMInfo: ...

    def open_generation(self, config: moshi_lm_pb2.GenerateConfig) -> Any: ...


class DialogueSession:
    """Takes 1920-sample frames of the user's voice (24 kHz float32); yields DialogueFrames.
    Holds an LM slot and two codec slots (an encoder and a decoder) until it ends."""

    def __init__(self, codec: Codec, lm: LanguageModel, config: moshi_lm_pb2.GenerateConfig,
                 on_close: Callable[[], None] | None = None):
        """``on_close``: called once, at the first ``close`` (gives the dialogue's slot back)."""
        info = lm.info()
        self._on_close, self._close_lock = on_close, threading.Lock()
        # Where an asyncio server runs this session's blocking calls (services.core.aio);
        # None: the loop's default pool.
        self.executor: Executor | None = None
        self._streams: list[Any] = []
        try:  # on CapacityError, give back what was taken
            self._lm = self._take(lm.open_generation(config))
            self._encoder = self._take(codec.open_encoder(info.num_input_codebooks))
            self._decoder = self._take(codec.open_decoder(info.num_output_codebooks))
        except EngineError:
            self.close()
            raise
        self._pump = threading.Thread(target=self._encode_to_lm, name="dialogue-pump",
                                      daemon=True)
        self._pump.start()

    def _take(self, stream: Any) -> Any:
        self._streams.append(stream)
        return stream

    def send(self, frame: np.ndarray) -> None:
        self._encoder.send(frame)

    def finish(self) -> None:
        self._encoder.finish()

    def __iter__(self) -> Iterator[DialogueFrame]:
        index = 0
        for out in self._lm:
            if out is None:  # a step inside the model's delay: nothing to play yet
                continue
            # One frame in flight per session: the LM keeps stepping meanwhile, and other
            # sessions fill the decoder's batch.
            self._decoder.send(out.audio)
            yield DialogueFrame(index, self._decoder.receive(), out.text_token, out.text)
            index += 1
        self._decoder.finish()

    def close(self, error: EngineError | None = None) -> None:
        for stream in self._streams:
            stream.close(error)
        with self._close_lock:
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def _encode_to_lm(self) -> None:
        try:
            for codes in self._encoder:
                self._lm.send(codes)
            self._lm.finish()
        except EngineError as error:  # ends the dialogue; the consumer raises it
            self.close(error)
