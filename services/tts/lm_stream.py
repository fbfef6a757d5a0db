"""A synthesis stream on a Moshi-architecture LM's engine (``DelayedAudioTTS``): ticks in,
``TTSTick``s out, like a session of the TTS engine, so the synthesis pipeline and service run
unchanged next to dialogue sessions on one loaded LM.

The forced text of each step comes from a word state machine run here, on the ticker's
thread (its choices do not depend on the model); a tick whose step needs text that has not
arrived sends nothing to the LM and reports ``waiting``. Output frame i holds the audio of
text step i + 1 (the LM's de-delayed frames), so a word fed at step s starts at
(s - 1) / 12.5 s of the output.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

from services.core.constants import FRAME_RATE, TEXT_PAD
from services.core.engine import Engine, EngineError
from services.moshi_lm.generate import SamplingSettings
from services.tts.delayed_audio import DelayedAudioTTS
from services.tts.generate import TTSOutput, TTSRequest, Word
from services.tts.pipeline import WAIT_POLL_SECONDS
from services.tts.script import ScriptBuilder, TextTokenizer
from services.tts.state_machine import StateMachineConfig, WordStateMachine
from services.tts.stepper import TextInbox, TTSTick

_END = object()


@dataclasses.dataclass(frozen=True)
class _Step:
    fed: int
    words: list[Word]
    done: bool


class LMSynthesisStream:
    def __init__(self, engine: Engine, mode: DelayedAudioTTS, settings: SamplingSettings,
                 tokenizer: TextTokenizer, inbox: TextInbox):
        self.mode, self.inbox = mode, inbox
        self._lm = engine.open(mode.stream(settings))
        self.machine = WordStateMachine(StateMachineConfig(card=mode.cfg.text_card + 1,
                                                           max_padding=0))
        self.builder = ScriptBuilder(tokenizer, multi_speaker=False)
        self._expected: queue.Queue = queue.Queue()
        self._steps = 0
        self._waiting = False  # a waiting tick was reported and no step made since
        self._closed = threading.Event()

    @property
    def _last_step(self) -> int | None:
        end = self.machine.end_step
        return None if end is None else end + max(self.mode.delays) + self.mode.final_padding

    def send(self, _tick: object) -> None:
        """One tick (from the ticker thread): the next step, if its text is there."""
        version = self.inbox.version
        text, ended = self.inbox.take()
        if text:
            self.machine.add(self.builder.push(text))
        if ended and not self.machine.input_ended:
            self.machine.add(self.builder.finish())
            self.machine.end_input()
        last = self._last_step
        if last is not None and self._steps > last:
            self._closed.wait()  # finished: hold the ticker until the session closes
            return
        if self.machine.needs_text:
            if not self._waiting:
                self._waiting = True
                self._expected.put(version)
            self.inbox.wait_for_news(version, WAIT_POLL_SECONDS)
            return
        self._waiting = False
        before = len(self.machine.transcript)
        fed = self.machine.step(TEXT_PAD).token
        words = [Word(w.text, w.step, max(0, w.step - 1) / FRAME_RATE)
                 for w in self.machine.transcript[before:]]
        self._steps += 1
        last = self._last_step
        self._expected.put(_Step(fed, words, last is not None and self._steps > last))
        self._lm.send(self.mode.inputs([fed])[0])

    def finish(self) -> None:
        self._expected.put(_END)
        self._lm.finish()

    def __iter__(self) -> Iterator[TTSTick]:
        while (item := self._expected.get()) is not _END:
            if isinstance(item, int):
                yield TTSTick(None, True, item)
                continue
            frame = self._lm.receive()
            audio = None if frame is None else frame.audio
            yield TTSTick(TTSOutput(item.fed, audio, audio is not None, item.words, item.done),
                          False, 0)
            if item.done:
                return

    def close(self, error: EngineError | None = None) -> None:
        self._closed.set()
        self._expected.put(_END)
        self._lm.close(error)


class LMSynthesisBackend:
    """What the TTS service needs of a Moshi-architecture LM served by its own engine (shared
    with dialogue sessions): no voice, no cfg condition, no speed bias."""

    owns_engine = False
    voice_conditioning = False
    cfg_values = None

    def __init__(self, engine: Engine, mode: DelayedAudioTTS, tokenizer: TextTokenizer,
                 name: str):
        self.engine, self.mode, self.tokenizer, self.name = engine, mode, tokenizer, name
        self.cfg = mode.cfg
        self.audio_delay = mode.audio_delay_frames / FRAME_RATE
        self.device = None

    def check(self, request: TTSRequest) -> None:
        if any(v is not None for v in request.voices):
            raise ValueError("this model takes no voice")
        if not 1 <= (request.num_codebooks or self.cfg.dep_q) <= self.cfg.dep_q:
            raise ValueError(f"num_codebooks must be in 1..{self.cfg.dep_q}")

    def open_stream(self, request: TTSRequest, inbox: TextInbox) -> LMSynthesisStream:
        return LMSynthesisStream(self.engine, self.mode, request.sampling, self.tokenizer,
                                 inbox)
