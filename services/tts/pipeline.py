"""One synthesis = two streams chained: the TTS engine -> the Mimi decoder.

    client text --> TextInbox ..(read by the engine thread before each step)
    ticker thread --ticks--> TTS engine ==frames, words==> [consumer] --> Mimi decoder
                                                               |  audio of emitted frames
    SynthesisChunk(audio 24 kHz, words, waiting) <-- iteration +

The ticker keeps the TTS session stepping (its bounded queue paces it to the consumer) and
sleeps while the session waits for text. Words are released once the audio sent covers
their start, so a client can play them in sync.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from services.core.constants import FRAME_RATE
from services.core.engine import EngineError
from services.tts.generate import Word
from services.tts.stepper import TextInbox

WAIT_POLL_SECONDS = 0.5  # a waiting ticker re-checks this often even without news


@dataclasses.dataclass(frozen=True)
class SynthesisChunk:
    audio: np.ndarray  # float32 24 kHz samples (a whole number of 80 ms frames, maybe none)
    words: list[Word]  # words whose start the audio sent so far covers
    waiting_for_text: bool
    audio_seconds: float  # audio sent so far, this chunk included
    done: bool = False  # the last chunk


class Codec(Protocol):
    def open_decoder(self, num_codebooks: int) -> Any: ...


class SynthesisSession:
    """Holds a TTS slot and a codec slot until it ends. ``push_text`` / ``end_text`` from any
    thread; iterate from one consumer thread."""

    def __init__(self, open_stream: Callable[[TextInbox], Any], codec: Codec,
                 num_codebooks: int, text: str = "", end_of_input: bool = False):
        """``open_stream(inbox)`` opens a stream of ticks -> TTSTicks reading its text from
        ``inbox``: a TTS engine session, or an ``LMSynthesisStream`` on a Moshi LM."""
        self.inbox = TextInbox(text, end_of_input)
        self.num_codebooks = num_codebooks
        self._tts = open_stream(self.inbox)
        try:
            self._decoder = codec.open_decoder(num_codebooks)
        except EngineError:
            self._tts.close()
            raise
        self._stop = threading.Event()
        self._wait_version: int | None = None
        self._ticker = threading.Thread(target=self._tick, name="tts-ticker", daemon=True)
        self._ticker.start()

    def push_text(self, text: str) -> None:
        self.inbox.push(text)

    def end_text(self) -> None:
        self.inbox.end()

    # The engine-session interface, for grpc_stream.serve_stream (text goes to the inbox).
    def send(self, item: Any) -> None:
        raise TypeError("send text with push_text")

    def finish(self) -> None:
        if not self.inbox.ended:
            self.inbox.end()

    def __iter__(self) -> Iterator[SynthesisChunk]:
        pending: list[Word] = []
        frames_sent, reported_wait = 0, False
        for tick in self._tts:
            if tick.waiting:
                self._wait_version = tick.inbox_version
                if not reported_wait:
                    reported_wait = True
                    yield SynthesisChunk(np.zeros(0, np.float32), [], True,
                                         frames_sent / FRAME_RATE)
                continue
            out = tick.output
            if out is None:
                continue
            reported_wait = False
            pending += out.words
            audio = np.zeros(0, np.float32)
            if out.frame is not None:
                self._decoder.send(out.frame[:self.num_codebooks])
                decoded = self._decoder.receive()
                if out.emit:
                    audio = np.clip(decoded, -1.0, 1.0)
                    frames_sent += 1
            sent = frames_sent / FRAME_RATE
            ready = [w for w in pending if out.done or w.start < sent]
            pending = pending[len(ready):]
            if len(audio) or ready or out.done:
                yield SynthesisChunk(audio, ready, False, sent, out.done)
            if out.done:
                break
        self.close()

    def close(self, error: EngineError | None = None) -> None:
        self._stop.set()
        self._tts.close(error)
        self._decoder.close(error)

    def _tick(self) -> None:
        try:
            while not self._stop.is_set():
                version, self._wait_version = self._wait_version, None
                if version is not None:
                    self.inbox.wait_for_news(version, WAIT_POLL_SECONDS)
                self._tts.send(None)
        except EngineError:  # the session ended (closed, cancelled): the consumer knows why
            return
