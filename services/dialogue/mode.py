"""A dialogue on the tick: the user's audio encoded onto the user's streams, Moshi's text and
audio sampled, its audio decoded in the same tick."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from services.core.engine import Events
from services.core.tick import Mode, Route, RowResult


@dataclasses.dataclass(frozen=True)
class DialogueFrame:
    index: int  # Moshi's frame number: it plays from index * 80 ms after the stream start
    audio: np.ndarray  # [1920] float32 at 24 kHz
    text_token: int
    text: str  # display text of the token ("" for padding)


class DialogueMode(Mode):
    """Takes 1920-sample float32 frames of the user's voice; gives a ``DialogueFrame`` per
    step once the model's delay is over (nothing before)."""

    route = Route.USER

    def __init__(self, sampling, num_input_codebooks: int, num_output_codebooks: int,
                 pieces: Sequence[str] | None = None):
        self.sampling, self.pieces = sampling, pieces
        self.encode_codebooks = num_input_codebooks
        self.decode_codebooks = num_output_codebooks
        self._frames = 0

    def output(self, result: RowResult) -> DialogueFrame | Events:
        if result.frame is None:  # a step inside the model's delay: nothing to play yet
            return Events()
        token = int(result.frame[0])
        self._frames += 1
        return DialogueFrame(self._frames - 1, result.pcm, token, piece(self.pieces, token))


def piece(pieces: Sequence[str] | None, token: int) -> str:
    """The display text of a text token ("" without a tokenizer)."""
    return pieces[token] if pieces is not None and 0 <= token < len(pieces) else ""
