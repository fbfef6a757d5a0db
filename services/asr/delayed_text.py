"""Recognition with a plain Moshi-architecture LM (one that also generates audio, dep_q > 0):
the session runs on the LM's own engine, next to dialogue sessions, with its own delays.

Moshi's inner-monologue text is aligned with Moshi's *own* audio streams, so the audio to
transcribe is forced onto those streams (the user's streams get silence), and the session's
text stream is delayed ``text_delay_frames`` behind them: at each step the model has heard
that much audio past the text it writes. As with Kyutai STT, the first frame is fed twice
(the LM ignores its inputs at step 0), so the de-delayed output frame i holds the text of
input frame i and a word's time is its frame index / 12.5.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from services.asr.timing import SttTiming
from services.asr.words import WordDecoder
from services.core.constants import UNGENERATED_TOKEN
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.stepper import LMInput, LMStream


@dataclasses.dataclass(frozen=True)
class DelayedTextASR:
    cfg: LMConfig
    text_delay_frames: int
    silence: np.ndarray  # codes [n_q - dep_q] of a silent frame, for the user's streams

    def __post_init__(self):
        if not self.cfg.dep_q:
            raise ValueError("an STT-layout model (dep_q = 0) runs with the Recognizer")
        if self.text_delay_frames < 1:
            raise ValueError("the text must lag the audio by at least one frame")

    @property
    def delays(self) -> tuple[int, ...]:
        return (self.cfg.delays[0] + self.text_delay_frames, *self.cfg.delays[1:])

    def stream(self, settings: SamplingSettings) -> LMStream:
        return LMStream(settings, self.delays)

    def inputs(self, frames: np.ndarray) -> list[LMInput]:
        """Code frames [T, >= dep_q] of the audio -> the session's step inputs (the first
        frame twice)."""
        return [x for i, codes in enumerate(frames) for x in self.step_inputs(codes, i == 0)]

    def step_inputs(self, codes: np.ndarray, first: bool) -> list[LMInput]:
        """The step input(s) of one code frame [>= dep_q]; two for the first frame."""
        forced = np.full(1 + self.cfg.dep_q, UNGENERATED_TOKEN, np.int64)
        forced[1:] = codes[:self.cfg.dep_q]
        step = LMInput(user_codes=self.silence, forced=forced)
        return [step, step] if first else [step]

    def flush_frames(self) -> int:
        """Silent frames to feed after the audio so every frame's text comes out."""
        return self.text_delay_frames + 1

    def decoder(self, decode) -> WordDecoder:
        return WordDecoder(decode, SttTiming(audio_delay_seconds=0.0))
