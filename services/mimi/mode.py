"""The codec service's own streams on the tick: encoding (80 ms of 24 kHz audio in, one code
frame out) and decoding (a code frame in, 1920 samples out)."""

from __future__ import annotations

import numpy as np

from services.core.tick import Mode, RowResult


class EncodeMode(Mode):
    def __init__(self, num_codebooks: int):
        self.encode_codebooks = num_codebooks

    def output(self, result: RowResult) -> np.ndarray:
        return result.codes


class DecodeMode(Mode):
    def __init__(self, num_codebooks: int):
        self.decode_codebooks = num_codebooks

    def output(self, result: RowResult) -> np.ndarray:
        return result.pcm
