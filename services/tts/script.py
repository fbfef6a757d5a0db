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
# A break tag, every part bounded so a tag is never longer than MAX_TAG_CHARS: text is checked
# chunk by chunk (``TextCheck``) and only the last MAX_TAG_CHARS characters are kept for that.
_BREAK = re.compile(r"""<break\s{1,16}time\s{0,16}=\s{0,16}["']?([0-9]{0,16}\.?[0-9]{1,16})"""
                    r"""\s{0,16}s["']?\s{0,16}/?>""")
# Anything that looks like a break tag: each must be a valid break (else the client wrote
# something it did not mean, such as time="1e400s", and would hear it read out as words).
_BREAK_LIKE = re.compile(r"<\s{0,16}break\b[^<>]{0,160}>", re.IGNORECASE)
MAX_TAG_CHARS = 200  # longer than any match of _BREAK or _BREAK_LIKE
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
    # An unclosed "<" may be the start of a break tag, unless it is further back than any tag
    # is long: then it is text (so a stray "<" does not hold back everything after it).
    if tag >= 0 and text.find(">", tag) < 0 and len(text) - tag <= MAX_TAG_CHARS:
        cut = min(cut, _last_space_end(text, tag))
    for match in _BREAK.finditer(text):
        if match.start() < cut < match.end():
            cut = match.start()
    return cut


def _last_space_end(text: str, end: int) -> int:
    return max((m.end() for m in _WHITESPACE.finditer(text, 0, end)), default=0)


class TextCheck:
    """The client-side checks of one request's text, chunk by chunk, before it is queued:
    its total length and every break tag (InvalidInput saying what is wrong). It keeps only
    the last MAX_TAG_CHARS characters, to see tags that span two chunks."""

    def __init__(self, max_chars: int, max_break_seconds: float):
        self.max_chars, self.max_break_seconds = max_chars, max_break_seconds
        self.chars = 0
        self._tail = ""

    def push(self, text: str) -> None:
        from services.core.engine import InvalidInput  # torch-free module otherwise

        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}")
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise InvalidInput(f"the text of one request is at most {self.max_chars} "
                               f"characters; got {self.chars} so far (split it into several "
                               "requests)")
        window = self._tail + text
        for match in _BREAK_LIKE.finditer(window):
            if match.end() > len(self._tail):  # not checked with the previous chunk
                self._check_break(match.group())
        self._tail = window[-MAX_TAG_CHARS:]

    def _check_break(self, tag: str) -> None:
        from services.core.engine import InvalidInput

        valid = _BREAK.fullmatch(tag)
        if valid is None:
            raise InvalidInput(f"invalid break tag {tag[:60]!r}: write "
                               f"<break time=\"1.5s\"/> (at most {self.max_break_seconds:g} s)")
        seconds = float(valid.group(1))
        if seconds > self.max_break_seconds:
            raise InvalidInput(f"a break of {seconds:g} s is longer than the longest allowed, "
                               f"{self.max_break_seconds:g} s")


def prepare_script(turns: Sequence[str], tokenizer: WordEncoder, padding_between: int = 1,
                   multi_speaker: bool = True) -> list[Entry]:
    """Entries of a whole script, one turn after the other."""
    entries = []
    for index, turn in enumerate(turns):
        builder = ScriptBuilder(tokenizer, index, padding_between, multi_speaker)
        entries += builder.push(turn) + builder.finish()
    return entries
