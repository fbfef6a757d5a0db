"""Synthesis with a plain Moshi-architecture LM: the session runs on the LM's own engine,
next to dialogue sessions, with its own delays.

The script's text is forced onto the text stream, laid on the grid by the word state machine
with every word as soon as the previous one's tokens are in (the model is not asked when to
start a word: the forced text is known before each step), and the session's audio streams are
delayed ``audio_delay_frames`` behind the text, so the model speaks each word having read
that far ahead. The user's streams get silence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from services.core.constants import TEXT_PAD, UNGENERATED_TOKEN
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.stepper import LMInput, LMStream
from services.tts.script import TextTokenizer, prepare_script
from services.tts.state_machine import StateMachineConfig, WordStateMachine


@dataclasses.dataclass(frozen=True)
class DelayedAudioTTS:
    cfg: LMConfig
    audio_delay_frames: int
    silence: np.ndarray  # codes [n_q - dep_q] of a silent frame, for the user's streams
    final_padding: int = 4  # steps generated past the end of the text and the delay

    @property
    def delays(self) -> tuple[int, ...]:
        cfg, shift = self.cfg, self.audio_delay_frames
        generated = tuple(d + shift for d in cfg.delays[1:1 + cfg.dep_q])
        return (cfg.delays[0], *generated, *cfg.delays[1 + cfg.dep_q:])

    def stream(self, settings: SamplingSettings) -> LMStream:
        return LMStream(settings, self.delays)

    def text_tokens(self, turns: Sequence[str], tokenizer: TextTokenizer) -> list[int]:
        """The forced text of every step, through the end of the audio."""
        machine = WordStateMachine(
            StateMachineConfig(card=self.cfg.text_card + 1, max_padding=0),
            prepare_script(turns, tokenizer, multi_speaker=False), end_of_input=True)
        tokens = []
        while machine.end_step is None:
            tokens.append(machine.step(TEXT_PAD).token)
        tail = self.audio_delay_frames + max(self.cfg.delays) + self.final_padding
        return tokens + [TEXT_PAD] * tail

    def inputs(self, text_tokens: Sequence[int]) -> list[LMInput]:
        forced = np.full((len(text_tokens), 1 + self.cfg.dep_q), UNGENERATED_TOKEN, np.int64)
        forced[:, 0] = text_tokens
        return [LMInput(user_codes=self.silence, forced=row) for row in forced]
