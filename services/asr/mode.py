"""Recognition on the tick, for a Kyutai STT checkpoint and for a Moshi-architecture LM alike.

A recognition session's inputs are 1920-sample float32 frames of 24 kHz audio and ``Marker``s;
its outputs are ``ASREvent``s. The two kinds of model differ only in where the audio goes and
where the text sits in time (``RecognitionMode.for_stt`` / ``for_moshi``):

- a Kyutai STT checkpoint (dep_q = 0) takes every codebook of the audio on its input streams;
  its text lags the audio by the checkpoint's ``audio_delay_seconds`` (``SttTiming``);
- a Moshi-architecture LM hears the audio forced onto its *own* audio streams (its
  inner-monologue text is aligned with those), the user's streams get silence, and the text
  stream is delayed ``text_delay_frames`` behind them; the de-delayed frame i then holds the
  text of input frame i, so a word's time is its frame index / 12.5.

Both feed the first frame twice (Kyutai's framing: the LM ignores its input at step 0), get a
silence prefix (``prefix_samples``) and, at the end of input, flush silence so that the last
words come out (``flush_samples``); ``end`` closes the word still open. See
docs/architecture.md §3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from services.asr.timing import SttTiming
from services.asr.vad import TurnDetector
from services.asr.words import Word, WordDecoder
from services.core.constants import FRAME_RATE
from services.core.engine import Events
from services.core.tick import Mode, Route, RowResult
from services.moshi_lm.config import LMConfig


@dataclasses.dataclass(frozen=True)
class Marker:
    """Acknowledged (as an event) once every frame sent before it is processed."""

    id: int


@dataclasses.dataclass(frozen=True)
class ASREvent:
    """One thing to tell the client; exactly one of the optional fields is set."""

    audio_processed: float  # seconds of the client's audio processed so far
    word: Word | None = None
    speech_started: float | None = None  # time of the first word of a turn
    end_of_turn: float | None = None  # time of the step that ended the turn
    pauses: list[float] | None = None
    marker: int | None = None


class RecognitionMode(Mode):
    feed_first_frame_twice = True

    def __init__(self, route: Route, encode_codebooks: int, timing: SttTiming,
                 word_timing: SttTiming, decode: Callable[[Sequence[int]], str], sampling,
                 delays: tuple[int, ...] | None = None, interim: bool = True,
                 pauses: bool = False):
        """``timing``: the framing (silence prefix, text delay: the flush); ``word_timing``:
        the audio time of the text of each returned frame."""
        self.route, self.encode_codebooks = route, encode_codebooks
        self.timing, self.sampling, self.delays = timing, sampling, delays
        self.interim, self.report_pauses = interim, pauses
        self.decoder = WordDecoder(decode, word_timing)
        self.turn = TurnDetector()
        self.frames = 0  # frames of audio processed, the silence prefix included

    @classmethod
    def for_stt(cls, cfg: LMConfig, timing: SttTiming, decode: Callable[[Sequence[int]], str],
                sampling, interim: bool = True, pauses: bool = False) -> RecognitionMode:
        if cfg.dep_q:
            raise ValueError("a Kyutai STT checkpoint has dep_q = 0 (all audio in)")
        return cls(Route.USER, cfg.num_input_codebooks, timing, timing, decode, sampling,
                   interim=interim, pauses=pauses)

    @classmethod
    def for_moshi(cls, cfg: LMConfig, text_delay_frames: int,
                  decode: Callable[[Sequence[int]], str], sampling, interim: bool = True
                  ) -> RecognitionMode:
        if not cfg.dep_q:
            raise ValueError("recognition by delays needs a model that generates audio")
        if text_delay_frames < 1:
            raise ValueError("the text must lag the audio by at least one frame")
        delays = (cfg.delays[0] + text_delay_frames, *cfg.delays[1:])
        # De-delayed frame i holds the text of input frame i: no offset on word times.
        return cls(Route.GENERATED, cfg.dep_q, SttTiming.from_text_delay_frames(text_delay_frames),
                   SttTiming(0.0), decode, sampling, delays, interim)

    # ---- framing, for the adapters --------------------------------------------------------

    @property
    def prefix_samples(self) -> int:
        return self.timing.prefix_samples

    @property
    def flush_samples(self) -> int:
        return self.timing.flush_samples

    # ---- Mode -----------------------------------------------------------------------------

    def is_data(self, item) -> bool:
        return not isinstance(item, Marker)

    def output(self, result: RowResult) -> Events:
        if isinstance(result.item, Marker):
            return Events([ASREvent(self._processed(), marker=result.item.id)])
        self.frames += 1
        events = Events()
        for step in (result.first, result):
            if step is not None and step.frame is not None:
                pauses = None if step.extra is None else [float(p) for p in step.extra[:, 0]]
                events += self._events(self.decoder.push(int(step.frame[0])), pauses,
                                       report=step is result)
        return events

    def end(self) -> Events:
        return self._events(self.decoder.flush(), None)

    def _events(self, words: list[Word], pauses: list[float] | None,
                report: bool = True) -> Events:
        """``report``: whether the pause probabilities are told (once per frame)."""
        processed, events = self._processed(), Events()
        for word in words:
            if word is words[0] and self.turn.speech():  # a turn begins with its first word
                events.append(ASREvent(processed, speech_started=word.start))
            if word.is_final or self.interim:
                events.append(ASREvent(processed, word=word))
        if pauses is not None and self.turn.update(pauses):  # the end of turn needs the heads
            events.append(ASREvent(processed, end_of_turn=self.timing.audio_time(self.frames)))
        if report and self.report_pauses and pauses is not None:
            events.append(ASREvent(processed, pauses=pauses))
        return events

    def _processed(self) -> float:
        return max(0.0, self.frames / FRAME_RATE - self.timing.silence_prefix_seconds)


def final_words(events: Sequence[ASREvent]) -> list[Word]:
    return [e.word for e in events if e.word is not None and e.word.is_final]


def frames_of_clip(pcm: np.ndarray, mode: RecognitionMode) -> np.ndarray:
    """The frames a recognition session is fed for a whole clip (24 kHz mono): the silence
    prefix, the clip, the flush silence, a partial last frame dropped."""
    samples = np.concatenate([np.zeros(mode.prefix_samples, np.float32),
                              np.asarray(pcm, np.float32),
                              np.zeros(mode.flush_samples, np.float32)])
    return samples[:len(samples) // 1920 * 1920].reshape(-1, 1920)
