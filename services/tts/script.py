"""From text to the entries the TTS word state machine lays on the 12.5 Hz grid
(docs/architecture.md §4.3).

A script is a list of turns. Each word becomes one ``Entry``: its SentencePiece tokens (the
first word of a turn gets the speaker token in front) and the padding steps it forces after it.
``<break time="Xs"/>`` becomes an entry without tokens that forces round(X * 12.5) steps.

Text may also arrive in chunks (an LLM streaming into the synthesiser): ``ScriptBuilder``
emits a word only once the whitespace after it (or the end of input) has arrived, so chunked
and whole text give exactly the same entries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Protocol

from services.core.constants import FRAME_RATE

SPEAKER_TOKENS = (1, 2)  # main speaker on even turns, the other speaker on odd turns
_BREAK = re.compile(r"""<break\s+time\s*=\s*["']?([0-9]*\.?[0-9]+)\s*s["']?\s*/?>""")
_WHITESPACE = re.compile(r"\s+")


class WordEncoder(Protocol):
    """What a script needs of a tokenizer: text to token ids (SentencePiece, built-in)."""

    def encode(self, text: str) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class Entry:
    """One word (or break) of a script."""

    tokens: tuple[int, ...]  # empty for a break
    text: str  # the word as written (punctuation kept); "" for a break
    padding: int  # steps of padding forced after the entry is consumed

    @property
    def is_break(self) -> bool:
        return not self.tokens


def normalize(text: str) -> str:
    """The character rewrites the reference applies before splitting into words."""
    text = text.replace("\u2019", "'").replace(":", " ")
    return text.replace("(", "").replace(")", "")


def word_padding(num_tokens: int, padding_between: int) -> int:
    """Forced padding after a word: ``padding_between + len(tokens) - 1`` (none when 0), so a
    word of n tokens is given at least n steps with the default padding_between = 1."""
    return padding_between + num_tokens - 1 if padding_between > 0 else 0


def break_padding(seconds: float) -> int:
    return round(seconds * FRAME_RATE)


def split_words(text: str) -> Iterator[str | float]:
    """Words (str) and breaks (their duration in seconds, float) in reading order."""
    position = 0
    for match in _BREAK.finditer(text):
        yield from _words(text[position:match.start()])
        yield float(match.group(1))
        position = match.end()
    yield from _words(text[position:])


def _words(text: str) -> list[str]:
    return [word for word in _WHITESPACE.split(normalize(text)) if word]


class ScriptBuilder:
    """Turns the text of one turn, possibly arriving in chunks, into entries."""

    def __init__(self, tokenizer: WordEncoder, turn_index: int = 0, padding_between: int = 1,
                 multi_speaker: bool = True):
        self.tokenizer = tokenizer
        self.padding_between = padding_between
        self.speaker_token = SPEAKER_TOKENS[turn_index % 2] if multi_speaker else None
        self._pending = ""  # text whose last word may still continue in the next chunk
        self._first_word = True

    def push(self, text: str) -> list[Entry]:
        """Entries of every word that is complete in ``text`` (and the text held back before)."""
        self._pending += text
        cut = _complete_prefix(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._entries(ready)

    def finish(self) -> list[Entry]:
        """End of the turn: whatever is held back is complete now."""
        ready, self._pending = self._pending, ""
        return self._entries(ready)

    def _entries(self, text: str) -> list[Entry]:
        entries = []
        for item in split_words(text):
            if isinstance(item, float):
                entries.append(Entry((), "", break_padding(item)))
                continue
            tokens = list(self.tokenizer.encode(item))
            if self._first_word and self.speaker_token is not None:
                tokens.insert(0, self.speaker_token)
            self._first_word = False
            entries.append(Entry(tuple(tokens), item, word_padding(len(tokens),
                                                                   self.padding_between)))
        return entries


def _complete_prefix(text: str) -> int:
    """Length of the prefix of ``text`` that later text cannot change: up to the last
    whitespace, but neither inside a break tag nor past the word where an unclosed tag opens."""
    cut = _last_space_end(text, len(text))
    tag = text.rfind("<")
    if tag >= 0 and text.find(">", tag) < 0:
        cut = min(cut, _last_space_end(text, tag))
    for match in _BREAK.finditer(text):
        if match.start() < cut < match.end():
            cut = match.start()
    return cut


def _last_space_end(text: str, end: int) -> int:
    return max((m.end() for m in _WHITESPACE.finditer(text, 0, end)), default=0)


def prepare_script(turns: Sequence[str], tokenizer: WordEncoder, padding_between: int = 1,
                   multi_speaker: bool = True) -> list[Entry]:
    """Entries of a whole script, one turn after the other."""
    entries = []
    for index, turn in enumerate(turns):
        builder = ScriptBuilder(tokenizer, index, padding_between, multi_speaker)
        entries += builder.push(turn) + builder.finish()
    return entries
