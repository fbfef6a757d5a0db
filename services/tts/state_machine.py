"""The TTS word state machine (docs/architecture.md §4.4-4.6): it decides, step by step, which
text token the model is fed.

The model proposes a text token at every step; only two proposals matter: ``new_word`` (0,
"start the next word now") and ``pad`` (3). The machine accepts a new word only when the
previous word's tokens were all fed and its forced padding has elapsed, and forces one once
``max_padding`` steps of padding went by. With a look-ahead stream (``second_stream_ahead`` =
L), a second token stream shows the model the word L words ahead, and both streams are muxed
into one id ``(second + 1) * card + main`` (second = -1: nothing, embedded as zero).

Grid of a two-word script with L = 1: word A (tokens s a1 a2, s the speaker token, forced
padding 3) and word B (token b1, padding 1); initial padding 2; "." is any other proposal:

    step      0    1    2    3    4    5    6    7    8    9
    proposed  0    .    0    .    .    0    0    0    0    0
    main      pad  pad  s    a1   a2   pad  b1   pad  pad  pad
    second    -    -    0    b1   -    -    0    -    0    -     (end_step = 8)

One machine per session; a step costs O(1) plus the tokens of a newly consumed word.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from services.core.constants import TEXT_EPAD, TEXT_PAD, ZERO_TOKEN
from services.tts.script import Entry


@dataclasses.dataclass(frozen=True)
class StateMachineConfig:
    card: int  # text_card + 1: size of one muxed digit
    second_stream_ahead: int = 0  # L > 0: look-ahead stream showing the L-th next word
    max_padding: int = 6  # steps of padding after which a new word is forced
    initial_padding: int = 2  # padding steps forced before the first word
    new_word: int = TEXT_EPAD
    pad: int = TEXT_PAD
    zero: int = ZERO_TOKEN

    def mux(self, main: int, second: int) -> int:
        return (second + 1) * self.card + main if self.second_stream_ahead else main


class Fed(NamedTuple):
    """The text input chosen for one step."""

    token: int  # what the model is fed (muxed when there is a look-ahead stream)
    main: int
    second: int  # zero (-1) without look-ahead stream


@dataclasses.dataclass
class ScriptWord:
    text: str
    step: int  # step at which its first token (or the new-word marker) was fed


class WordStateMachine:
    """Per-session state. Entries may keep arriving (``add``) until ``end_input``."""

    def __init__(self, cfg: StateMachineConfig, entries: Iterable[Entry] = (),
                 end_of_input: bool = False):
        self.cfg = cfg
        self.entries: list[Entry] = []
        self._nonempty: list[int] = []  # indices of entries with tokens, for the look-ahead
        self.cursor = 0  # next entry to consume
        self._nonempty_cursor = 0  # first index of _nonempty that is >= cursor
        self.input_ended = False
        self.queued: deque[int] = deque()  # tokens of the current word still to feed
        self.lookahead: deque[int] = deque()  # look-ahead tokens still to feed
        self.remaining_padding = cfg.initial_padding
        self.forced_padding = cfg.initial_padding
        self.step_index = 0
        self.end_step: int | None = None
        self.consumption_times: list[int] = []  # per entry, breaks included
        self.transcript: list[ScriptWord] = []  # per word, breaks excluded
        self.add(entries)
        if end_of_input:
            self.end_input()

    def add(self, entries: Iterable[Entry]) -> None:
        if self.input_ended:
            raise ValueError("text added after the end of input")
        for entry in entries:
            if entry.tokens:
                self._nonempty.append(len(self.entries))
            self.entries.append(entry)

    def end_input(self) -> None:
        self.input_ended = True

    @property
    def needs_text(self) -> bool:
        """True when the next step might consume an entry that has not arrived yet (or its
        look-ahead word): the session must wait rather than step, or its output would differ
        from the same text given at once."""
        if self.input_ended or self.queued or self.forced_padding > 0:
            return False
        if self.cursor >= len(self.entries):
            return True
        if not self.entries[self.cursor].tokens:
            return False
        ahead = len(self._nonempty) - self._nonempty_cursor - 1
        return ahead < self.cfg.second_stream_ahead

    @property
    def finished(self) -> bool:
        return self.end_step is not None

    def step(self, proposed: int) -> Fed:
        """Consumes the model's proposed text token for this step; returns what to feed."""
        cfg, step = self.cfg, self.step_index
        self.step_index += 1
        new_word = proposed == cfg.new_word
        if self.queued or self.forced_padding > 0:
            new_word = False
        elif self.remaining_padding <= 0:
            new_word = True
        if new_word:
            if self.cursor < len(self.entries):
                entry = self._consume(step)
                if entry.tokens:
                    return self._feed_new_word()
            elif self.end_step is None:
                # The model asks for a word past the last one: the script is over.
                self.end_step = step
                if self.cfg.second_stream_ahead:
                    return self._feed_new_word()
        return self._feed_pad()

    def _consume(self, step: int) -> Entry:
        entry = self.entries[self.cursor]
        self.cursor += 1
        self.consumption_times.append(step)
        self.remaining_padding = self.cfg.max_padding
        self.forced_padding = entry.padding
        if entry.tokens:
            self._nonempty_cursor += 1
            self.transcript.append(ScriptWord(entry.text, step))
            self.queued.extend(entry.tokens)
            ahead = self._nonempty_cursor + self.cfg.second_stream_ahead - 1
            if self.cfg.second_stream_ahead and ahead < len(self._nonempty):
                self.lookahead.extend(self.entries[self._nonempty[ahead]].tokens)
        return entry

    def _feed_new_word(self) -> Fed:
        cfg = self.cfg
        if not cfg.second_stream_ahead:
            return Fed(cfg.new_word, cfg.new_word, cfg.zero)
        # The marker goes on the look-ahead stream, the word's first token on the main one.
        main = self.queued.popleft() if self.queued else cfg.pad
        return Fed(cfg.mux(main, cfg.new_word), main, cfg.new_word)

    def _feed_pad(self) -> Fed:
        cfg = self.cfg
        self.remaining_padding -= 1
        self.forced_padding -= 1
        main = self.queued.popleft() if self.queued else cfg.pad
        second = cfg.zero
        if cfg.second_stream_ahead and self.lookahead:
            second = self.lookahead.popleft()
        return Fed(cfg.mux(main, second), main, second)
