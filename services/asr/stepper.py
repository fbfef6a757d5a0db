"""Recognition on the batching engine: every slot is a row of one ``Recognizer``.

A session's inputs, in order: code frames [K] of its audio, ``Marker``s (acknowledged when
every frame before them is processed) and one ``Flush`` at the end (closes the open word).
A session's first code frame is fed twice (the reference's framing: the LM ignores its input
at step 0), both steps in the same tick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from services.asr.recognizer import ASROutput, Recognizer
from services.core.engine import Engine
from services.moshi_lm.generate import SamplingSettings


@dataclasses.dataclass(frozen=True)
class Marker:
    id: int


@dataclasses.dataclass(frozen=True)
class Flush:
    """End of input (after the flush frames)."""


@dataclasses.dataclass(frozen=True)
class ASRStream:
    """A session's config."""

    sampling: SamplingSettings | None = None


@dataclasses.dataclass(frozen=True)
class ASRTick:
    output: ASROutput | None  # None for a marker
    marker: int | None = None
    frames: int = 0  # code frames of the session's audio processed so far


class ASRStepper:
    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        slots = len(recognizer.sessions)
        self._frames = [0] * slots

    def start(self, slots: Sequence[int], configs: Sequence[ASRStream]) -> None:
        for slot, config in zip(slots, configs, strict=True):
            self.recognizer.start(slot, config.sampling)
            self._frames[slot] = 0

    def step(self, slots: Sequence[int], inputs: Sequence[object]) -> list[ASRTick]:
        ticks: dict[int, ASRTick] = {}
        coded = [(s, x) for s, x in zip(slots, inputs, strict=True)
                 if isinstance(x, np.ndarray)]
        if coded:
            frames = torch.from_numpy(np.stack([x for _, x in coded]))
            first = [i for i, (s, _) in enumerate(coded) if self._frames[s] == 0]
            early = {}
            if first:
                outs = self.recognizer.step([coded[i][0] for i in first], frames[first])
                early = {coded[i][0]: out for i, out in zip(first, outs, strict=True)}
            outs = self.recognizer.step([s for s, _ in coded], frames)
            for (slot, _), out in zip(coded, outs, strict=True):
                self._frames[slot] += 1
                if slot in early:
                    out = merge_outputs(early[slot], out)
                ticks[slot] = ASRTick(out, frames=self._frames[slot])
        for slot, item in zip(slots, inputs, strict=True):
            if isinstance(item, Marker):
                ticks[slot] = ASRTick(None, item.id, self._frames[slot])
            elif isinstance(item, Flush):
                session = self.recognizer.sessions[slot]
                ticks[slot] = ASRTick(session.flush(), frames=self._frames[slot])
        return [ticks[s] for s in slots]


def merge_outputs(a: ASROutput, b: ASROutput) -> ASROutput:
    """Two consecutive steps' outputs as one."""
    return ASROutput(b.token, a.words + b.words, b.pauses, a.speech_started or b.speech_started,
                     a.end_of_turn or b.end_of_turn)


def asr_engine(recognizer: Recognizer, max_sessions: int, idle_timeout: float = 30.0,
               max_queue: int = 8) -> Engine:
    """A started engine serving recognition sessions of ``recognizer``."""
    return Engine("asr", ASRStepper(recognizer), max_sessions, max_queue=max_queue,
                  idle_timeout=idle_timeout).start()
