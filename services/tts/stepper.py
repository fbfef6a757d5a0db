"""Synthesis on the batching engine: every slot is a row of one ``TTSGenerator``.

A TTS session has no per-step input from its client: its inputs are ticks ("make the next
step"), and the text arrives on the side through the session's ``TextInbox`` (the engine thread
takes what is there before each step). A session whose next step needs text that has not
arrived is left out of the batch for that tick and reports ``waiting``: its model state does
not move, so text streamed slowly gives the same audio as text given at once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from services.core.engine import Engine
from services.tts.generate import TTSGenerator, TTSOutput, TTSRequest


class TextInbox:
    """Text of one session, written by the client's thread, read by the engine thread."""

    def __init__(self, text: str = "", ended: bool = False):
        self._cond = threading.Condition()
        self._chunks = [text] if text else []
        self.ended = ended
        self.version = 0  # bumped on every push / end, to wait for news

    def push(self, text: str) -> None:
        with self._cond:
            if self.ended:
                raise ValueError("text after the end of input")
            self._chunks.append(text)
            self.version += 1
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self.version += 1
            self._cond.notify_all()

    def take(self) -> tuple[str, bool]:
        with self._cond:
            text, self._chunks = "".join(self._chunks), []
            return text, self.ended

    def wait_for_news(self, version: int, timeout: float | None = None) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.version != version, timeout)


@dataclasses.dataclass(frozen=True)
class TTSStream:
    """A session's config."""

    request: TTSRequest
    inbox: TextInbox


@dataclasses.dataclass(frozen=True)
class TTSTick:
    """One tick's output: a step's output, or ``waiting`` (no step: text is missing)."""

    output: TTSOutput | None
    waiting: bool
    inbox_version: int  # the inbox version seen: a waiting session waits for a newer one


class TTSStepper:
    def __init__(self, generator: TTSGenerator):
        self.generator = generator
        self._inboxes: list[TextInbox | None] = [None] * len(generator.sessions)

    def start(self, slots: Sequence[int], configs: Sequence[TTSStream]) -> None:
        for slot, config in zip(slots, configs, strict=True):
            self.generator.start(slot, config.request, end_of_input=False)
            self._inboxes[slot] = config.inbox

    def step(self, slots: Sequence[int], inputs: Sequence[object]) -> list[TTSTick]:
        versions = {}
        for slot in slots:
            inbox, session = self._inboxes[slot], self.generator.sessions[slot]
            versions[slot] = inbox.version
            text, ended = inbox.take()
            if text:
                session.push_text(text)
            if ended and not session.machine.input_ended:
                session.end_text()
        sessions = self.generator.sessions
        ready = [s for s in slots if sessions[s].ready and not sessions[s].finished]
        outputs = dict(zip(ready, self.generator.step(ready), strict=True)) if ready else {}
        # A finished session's extra ticks are no-ops (output None, not waiting).
        return [TTSTick(outputs.get(s), s not in outputs and not sessions[s].finished,
                        versions[s]) for s in slots]


def tts_engine(generator: TTSGenerator, max_sessions: int, idle_timeout: float = 30.0,
               max_queue: int = 4) -> Engine:
    """A started engine serving synthesis sessions of ``generator``."""
    if max_sessions > len(generator.sessions):
        raise ValueError("the generator has fewer slots than max_sessions")
    return Engine("tts", TTSStepper(generator), max_sessions, max_queue=max_queue,
                  idle_timeout=idle_timeout).start()


class EngineBackend:
    """What the TTS service needs of a Kyutai TTS model served by its own engine."""

    owns_engine = True

    def __init__(self, generator: TTSGenerator, engine: Engine, name: str):
        self.generator, self.engine, self.name = generator, engine, name
        self.cfg = generator.model.cfg
        self.audio_delay = generator.tts.audio_delay
        self.voice_conditioning = bool(self.cfg.extra.get("cross_attention"))
        provider = getattr(generator.model, "condition_provider", None)
        lut = provider.conditioners["cfg"] if provider is not None \
            and "cfg" in provider.conditioners else None
        self.cfg_values = None if lut is None else lut.possible_values  # allowed cfg_coef
        self.device = generator.lm.device

    def check(self, request: TTSRequest) -> None:
        self.generator.check(request)

    def open_stream(self, request: TTSRequest, inbox: TextInbox):
        return self.engine.open(TTSStream(request, inbox))
