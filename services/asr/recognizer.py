"""Streaming speech recognition for B independent sessions at once (spec §3.2).

The recogniser is the LM with every audio codebook given (the input audio's Mimi codes) and
only the text sampled; its text lags the audio by the checkpoint's delay (``SttTiming``). Each
``Recognizer.step`` makes one LM step for the sessions given and turns each text token into
word reports (``WordDecoder``), pause probabilities and end-of-turn events (``TurnDetector``).

Framing follows the reference: ``silence_prefix`` zeros before the audio; the first code frame
fed twice (the LM ignores its input at step 0, so frame j is seen at step j + 1); at the end
of input, zeros for the text delay + 1 s (``flush``) so the last words come out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from services.asr.timing import SttTiming
from services.asr.vad import TurnDetector, pause_probabilities
from services.asr.words import Word, WordDecoder
from services.core.constants import FRAME_SIZE
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.model import LMModel


@dataclasses.dataclass
class ASROutput:
    """What one step gave a session."""

    token: int  # text token of the step
    words: list[Word]  # word reports (interim: end None; final: with end)
    pauses: list[float] | None  # pause probability of each extra head (None without heads)
    speech_started: bool  # the first word of a turn started at this step
    end_of_turn: bool


class ASRSession:
    def __init__(self, decode: Callable[[Sequence[int]], str], timing: SttTiming):
        self.decoder = WordDecoder(decode, timing)
        self.turn = TurnDetector()
        self.timing = timing
        self.steps = 0

    def output(self, token: int, pauses: list[float] | None) -> ASROutput:
        self.steps += 1
        words = self.decoder.push(token)
        return self._report(token, words, pauses)

    def flush(self) -> ASROutput:
        """End of input, after the flush frames: closes the open word."""
        return self._report(-1, self.decoder.flush(), None)

    def _report(self, token: int, words: list[Word], pauses: list[float] | None) -> ASROutput:
        # A turn begins with its first word report; the end of turn needs the pause heads.
        started = bool(words) and self.turn.speech()
        ended = pauses is not None and self.turn.update(pauses)
        return ASROutput(token, words, pauses, started, ended)


class Recognizer:
    """Batched recognition over ``max_sessions`` slots of one LM."""

    def __init__(self, model: LMModel, decode: Callable[[Sequence[int]], str],
                 max_sessions: int, timing: SttTiming | None = None):
        cfg = model.cfg
        if cfg.dep_q:
            raise ValueError("the recogniser needs an STT-layout LM (dep_q = 0: all audio in)")
        self.model, self.decode = model, decode
        self.timing = timing or SttTiming.from_config({"stt_config": cfg.stt_config})
        self.lm = LMGenerator(model)
        self.state = self.lm.init_state(max_sessions)
        self.sessions: list[ASRSession | None] = [None] * max_sessions
        self._codes = torch.zeros(max_sessions, cfg.num_input_codebooks, dtype=torch.long,
                                  device=self.lm.device)
        self._active = torch.zeros(max_sessions, dtype=torch.bool, device=self.lm.device)

    @property
    def num_codebooks(self) -> int:
        return self.model.cfg.num_input_codebooks

    def start(self, slot: int, sampling: SamplingSettings | None = None) -> ASRSession:
        self._active.zero_()
        self._active[slot] = True
        self.lm.start(self.state, self._active, sampling)
        self.sessions[slot] = ASRSession(self.decode, self.timing)
        return self.sessions[slot]

    def release(self, slot: int) -> None:
        self.sessions[slot] = None

    @torch.inference_mode()
    def step(self, slots: Sequence[int], codes: Tensor) -> list[ASROutput]:
        """codes [n, num_codebooks]: the code frame of each session in ``slots``."""
        index = list(slots)
        self._active.zero_()
        self._active[index] = True
        self._codes[index] = codes.to(self._codes.device)
        result = self.lm.step(self.state, self._codes, None, self._active)
        tokens = result.text[index].tolist()
        pauses = None
        if result.extra_probs is not None:
            pauses = pause_probabilities(result.extra_probs[index]).float().cpu().tolist()
        return [self.sessions[s].output(tokens[i], None if pauses is None else pauses[i])
                for i, s in enumerate(index)]


def frame_codes(mimi_encode: Callable[[Tensor], Tensor], pcm: np.ndarray,
                timing: SttTiming) -> Tensor:
    """The code frames [T, K] the recogniser is fed for a whole clip (24 kHz mono): silence
    prefix, the clip, the flush zeros, a partial last frame dropped, the first frame twice."""
    samples = np.concatenate([np.zeros(timing.prefix_samples, np.float32),
                              pcm.astype(np.float32),
                              np.zeros(timing.flush_samples, np.float32)])
    samples = samples[:len(samples) // FRAME_SIZE * FRAME_SIZE]
    codes = mimi_encode(torch.from_numpy(samples)[None, None])[0].T  # [T, K]
    return torch.cat([codes[:1], codes])


def transcribe(recognizer: Recognizer, codes: Tensor, slot: int = 0,
               sampling: SamplingSettings | None = None) -> list[Word]:
    """Final words of a whole clip given its code frames (``frame_codes``)."""
    session = recognizer.start(slot, sampling)
    for frame in codes:
        recognizer.step([slot], frame[None])
    session.flush()
    recognizer.release(slot)
    return session.decoder.words
