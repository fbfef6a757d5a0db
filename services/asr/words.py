"""Words with start and end times from the recogniser's text stream (docs/architecture.md §3).

The text stream holds, per 12.5 Hz step, a word piece, PAD (3: nothing new) or EPAD (0: "a word
starts at the next step"). EPADs delimit words: the pieces between two EPADs form one word,
which starts at the step after the first EPAD and ends at the second one:

    step    10    11    12    13    14    15    16    17
    token   EPAD  ▁he   llo   PAD   PAD   EPAD  ▁wor  ld ...
    word          [hello ----------------)    [world ...
                  start = 11, emitted at 13 (first PAD after its pieces), end = 15

A word is reported as soon as its pieces are complete (the next PAD or EPAD), without an end
(interim), and again with its end when the next word starts (final). Pieces arriving after
that interim report update the word. At the end of input (``flush``) the open word ends at the
step after its last piece. Step times become audio times through ``SttTiming``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from services.asr.timing import SttTiming
from services.core.constants import TEXT_EPAD, TEXT_PAD


@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds of input audio
    end: float | None  # None while the word is still open (interim)

    @property
    def is_final(self) -> bool:
        return self.end is not None


class WordDecoder:
    """Per-session: text tokens in, step by step; word reports out."""

    def __init__(self, decode: Callable[[Sequence[int]], str], timing: SttTiming,
                 epad: int = TEXT_EPAD, pad: int = TEXT_PAD):
        self.decode = decode  # token ids -> text (the tokenizer's decode)
        self.timing = timing
        self.epad, self.pad = epad, pad
        self.step = 0  # index of the next token
        self.words: list[Word] = []  # final words
        self._pieces: list[int] = []  # pieces of the open word
        self._start: int | None = None  # start step of the open word (None: no word open)
        self._last_piece_step = 0
        self._reported = True  # the open word's current pieces were reported

    @property
    def current(self) -> Word | None:
        """The open word, if it has pieces (interim)."""
        text = self._text() if self._pieces else ""
        if not text:
            return None
        return Word(text, self.timing.audio_time(self._start), None)

    def push(self, token: int) -> list[Word]:
        """Consumes the text token of the next step; returns the words reported by it."""
        step, self.step = self.step, self.step + 1
        if token == self.epad:
            reports = self._close(step)
            self._start = step + 1
            return reports
        if token == self.pad:
            if self._reported:
                return []
            self._reported = True
            current = self.current
            return [current] if current is not None else []
        if self._start is None:  # pieces before any EPAD: the word starts with them
            self._start = step
        self._pieces.append(token)
        self._last_piece_step = step
        self._reported = False
        return []

    def flush(self) -> list[Word]:
        """End of input: the open word ends after its last piece."""
        reports = self._close(self._last_piece_step + 1)
        self._start = None
        return reports

    def _close(self, end_step: int) -> list[Word]:
        if not self._pieces:
            return []
        text = self._text()
        self._pieces = []
        self._reported = True
        if not text:  # pieces that decode to nothing (control tokens)
            return []
        word = Word(text, self.timing.audio_time(self._start), self.timing.audio_time(end_step))
        self.words.append(word)
        return [word]

    def _text(self) -> str:
        return self.decode(self._pieces).strip()
