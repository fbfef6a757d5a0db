"""The LM service's own streams on the tick: the client gives each step's input codebooks
(and optionally forced generated streams) and gets the de-delayed frames back as codes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from services.core.tick import Mode, Route, RowResult
from services.dialogue.mode import piece


@dataclasses.dataclass(frozen=True)
class LMFrame:
    """One de-delayed output frame of a session."""

    text_token: int
    text: str  # display text ("" for padding or without a tokenizer)
    audio: np.ndarray  # [dep_q] audio codes, decodable by Mimi at once
    extra_probs: np.ndarray | None = None  # [heads, dim] (STT pause heads), when the model has them


class GenerationMode(Mode):
    """Inputs: ``LMInput``s, or plain code frames [n_q - dep_q]; one output per step: an
    ``LMFrame``, or None for the first max_delay steps."""

    route = Route.HOST

    def __init__(self, sampling, delays: tuple[int, ...] | None = None,
                 pieces: Sequence[str] | None = None):
        self.sampling, self.delays, self.pieces = sampling, delays, pieces

    def output(self, result: RowResult) -> LMFrame | None:
        if result.frame is None:
            return None
        token = int(result.frame[0])
        return LMFrame(token, piece(self.pieces, token), result.frame[1:], result.extra)

