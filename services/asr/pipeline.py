"""One recognition = two streams chained: the Mimi encoder -> the ASR engine.

    client frames --send--> encoder ==codes==> [pump thread] --> ASR engine ==ticks==> events
    client markers ---------------------------> (in order, after the frames before them)

The caller sends the silence prefix and, after the client's audio, the flush silence
(``SttTiming``); ``finish`` then sends ``Flush``, which closes the open word. The consumer
gets ``ASREvent``s.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from services.asr.stepper import ASRTick, Flush, Marker
from services.asr.timing import SttTiming
from services.asr.words import Word, clamp_word
from services.core.constants import FRAME_RATE
from services.core.engine import EngineError

_FRAME, _END = "frame", "end"


@dataclasses.dataclass(frozen=True)
class ASREvent:
    """One thing to tell the client; exactly one of the optional fields is set."""

    audio_processed: float  # seconds of the client's audio processed so far
    word: Word | None = None
    speech_started: float | None = None  # time of the first word of a turn
    end_of_turn: float | None = None  # time of the step that ended the turn
    pauses: list[float] | None = None
    marker: int | None = None


class Codec(Protocol):
    def open_encoder(self, num_codebooks: int) -> Any: ...


class RecognitionSession:
    """Takes 1920-sample float32 frames (24 kHz) and Markers; yields ASREvents. ``asr`` is an
    opened stream of code frames -> ASRTicks: an ASR engine session, or an
    ``LMRecognitionStream`` on a Moshi LM's engine."""

    def __init__(self, asr: Any, codec: Codec, num_codebooks: int, timing: SttTiming,
                 interim: bool = True, pauses: bool = False):
        self.timing, self.interim, self.pauses = timing, interim, pauses
        # Seconds of the client's audio received so far (set by the service): word times
        # are clamped to it. None: not clamped.
        self.audio_seconds: Callable[[], float] | None = None
        self._asr = asr
        try:
            self._encoder = codec.open_encoder(num_codebooks)
        except EngineError:
            self._asr.close()
            raise
        self._order: queue.Queue = queue.Queue()
        self._pump = threading.Thread(target=self._encode_to_asr, name="asr-pump", daemon=True)
        self._pump.start()

    def send(self, item: np.ndarray | Marker) -> None:
        if isinstance(item, Marker):
            self._order.put(item)
            return
        self._order.put(_FRAME)
        self._encoder.send(item)

    def finish(self) -> None:
        self._order.put(_END)
        self._encoder.finish()

    def __iter__(self) -> Iterator[ASREvent]:
        for tick in self._asr:
            yield from self._events(tick)

    def close(self, error: EngineError | None = None) -> None:
        self._order.put(_END)
        self._asr.close(error)
        self._encoder.close(error)

    def _events(self, tick: ASRTick) -> Iterator[ASREvent]:
        processed = max(0.0, tick.frames / FRAME_RATE - self.timing.silence_prefix_seconds)
        if tick.marker is not None:
            yield ASREvent(processed, marker=tick.marker)
            return
        out, timing = tick.output, self.timing
        for index, word in enumerate(out.words):
            if self.audio_seconds is not None:
                word = clamp_word(word, self.audio_seconds())
            if out.speech_started and index == 0:
                yield ASREvent(processed, speech_started=word.start)
            if word.is_final or self.interim:
                yield ASREvent(processed, word=word)
        if out.end_of_turn:
            yield ASREvent(processed, end_of_turn=timing.audio_time(tick.frames))
        if self.pauses and out.pauses is not None:
            yield ASREvent(processed, pauses=out.pauses)

    def _encode_to_asr(self) -> None:
        encoded = iter(self._encoder)
        try:
            while (item := self._order.get()) is not _END:
                self._asr.send(next(encoded) if item is _FRAME else item)
            self._asr.send(Flush())
            self._asr.finish()
        except (EngineError, StopIteration) as error:  # the session ended; the consumer sees why
            self.close(error if isinstance(error, EngineError) else None)
