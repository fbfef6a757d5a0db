"""Synthesis on the tick, for a Kyutai TTS checkpoint and for a Moshi-architecture LM alike.

A synthesis session is *self-paced*: its client sends text (``str`` chunks, then ``finish``),
and the engine steps it whenever its next step has the text it needs, as fast as its reader
takes the output (``SynthesisChunk``s). Each step the session's word state machine chooses the
text token (``choose_text``); the audio frames the step returns are decoded in the same tick.
A step whose text has not arrived is not made (the session reports ``waiting_for_text``
once), so text streamed slowly gives the same audio as text given at once.

Text is bounded at every stage, so a client flooding text cannot grow the server: each chunk
is checked on the client's side before it is queued (``accept_input``: the request's total
length, every break tag; ``services.core.limits``); the session takes in another chunk only
while less than ``TEXT_BUFFER_CHARS`` of raw text waits (``wants_input``: the rest waits in
the engine's bounded inbox, and then in the client's flow control); and the raw text becomes
words (tokens, state-machine entries, far larger than the text) only as the word state
machine is about to need them, in pieces of at most ``TEXT_PIECE_CHARS``.

The two kinds of model differ in their settings (``SynthesisMode.for_tts`` / ``for_moshi``):

- a Kyutai TTS checkpoint proposes its text token and the state machine decides (new word or
  padding), conditioned on a voice and a cfg value; its audio lags the text by
  ``delay_steps`` frames in content, forced to "no audio" until then, and the output starts
  ``DROPPED_FRAMES`` decoded frames later (a start-up click), cut at ``end_step`` frames;
- a Moshi-architecture LM is fed the script as its text, every word as soon as the previous
  one's tokens are in, and its audio streams are delayed ``audio_delay_frames`` behind the
  text, so it speaks each word having read that far ahead; the user's streams get silence.

One word-time rule serves both: a word fed at step s starts at
``(s + audio_lag - first_output_frame) / 12.5`` s of the output. See docs/architecture.md
§4 and §5.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import torch

from services.core.constants import FRAME_RATE, TEXT_PAD
from services.core.limits import RequestLimits
from services.core.tick import Mode, Route, RowResult
from services.tts.script import ScriptBuilder, TextCheck, WordEncoder
from services.tts.state_machine import StateMachineConfig, WordStateMachine

DROPPED_FRAMES = 2  # first decoded frames of a Kyutai TTS left out of the output (a click)
DEFAULT_CONDITIONS = {"control": "ok", "cfg": "2.0"}
MOSHI_FINAL_PADDING = 4  # steps a Moshi-architecture LM speaks past its text and delays
TEXT_BUFFER_CHARS = 4096  # raw text a session holds before it stops taking more in
TEXT_PIECE_CHARS = 1024  # raw text turned into words at a time, when the machine needs them


@dataclasses.dataclass(frozen=True)
class TTSRequest:
    """One session's settings."""

    voices: tuple[torch.Tensor | None, ...] = ()  # speaker slots, voice embeddings [1, D, T]
    cfg_coef: float = 2.0  # given to the model through its "cfg" condition
    sampling: Any = None  # SamplingSettings (None: the checkpoint's lm_gen_config)
    num_codebooks: int | None = None  # audio codebooks generated (None: all)
    padding_bonus: float = 0.0  # added to the PAD logit: > 0 speaks slower
    # The text's bounds (max_text_chars, breaks): checked as the text is queued.
    limits: RequestLimits = dataclasses.field(default_factory=RequestLimits)

    def condition_values(self) -> dict[str, str]:
        return {**DEFAULT_CONDITIONS, "cfg": f"{self.cfg_coef:.1f}"}


@dataclasses.dataclass(frozen=True)
class SpokenWord:
    text: str
    step: int  # step at which the word was fed
    start: float  # seconds into the session's output audio


@dataclasses.dataclass(frozen=True)
class SynthesisChunk:
    audio: np.ndarray  # float32 24 kHz samples (a whole number of 80 ms frames, maybe none)
    words: list[SpokenWord]  # words whose start the audio sent so far covers
    waiting_for_text: bool
    audio_seconds: float  # audio sent so far, this chunk included
    done: bool = False  # the last chunk


class SynthesisMode(Mode):
    route = Route.SILENT
    chooses_text = True
    self_paced = True

    def __init__(self, machine: StateMachineConfig, builder: ScriptBuilder, *, sampling,
                 decode_codebooks: int, audio_lag: int, first_output_frame: int,
                 stop_tail: int, max_steps: int, cut_at_end: bool,
                 delays: tuple[int, ...] | None = None, reads_proposal: bool = False,
                 request: TTSRequest | None = None, model: Any = None,
                 limits: RequestLimits | None = None):
        """``audio_lag``: frames the audio lags the text in content; ``first_output_frame``:
        the first de-delayed frame in the output; the session stops ``stop_tail`` steps after
        the end of its text (``end_step``) or after ``max_steps``; ``cut_at_end``: the output
        ends ``end_step`` frames after it starts (else every frame up to the stop)."""
        self.machine, self.builder = WordStateMachine(machine), builder
        self.sampling, self.delays = sampling, delays
        self.decode_codebooks = decode_codebooks
        self.reads_text_proposal = reads_proposal
        self.audio_lag, self.first_output_frame = audio_lag, first_output_frame
        self.stop_tail, self.max_steps, self.cut_at_end = stop_tail, max_steps, cut_at_end
        self.request, self.model = request, model
        self.steps = 0  # steps made
        self.frames = 0  # de-delayed frames received
        self._fed_words = 0  # words of the transcript already reported as fed
        self._pending: list[SpokenWord] = []  # fed words whose audio is not out yet
        self._frames_sent = 0
        self._reported_wait = False
        limits = limits or (request.limits if request is not None else RequestLimits())
        self._check = TextCheck(limits.max_text_chars, limits.max_break_seconds)
        self._unread: collections.deque[str] = collections.deque()  # raw text, in order
        self._unread_chars = 0
        self._end_requested = False

    @classmethod
    def for_tts(cls, model: Any, tokenizer: WordEncoder, request: TTSRequest
                ) -> SynthesisMode:
        """On a Kyutai TTS checkpoint (``TTSModel``); ``request`` checked by ``check_request``."""
        cfg, tts = model.cfg, model.tts_config
        mode = cls(tts.state_machine(cfg.text_card),
                   ScriptBuilder(tokenizer, 0, tts.padding_between, tts.multi_speaker),
                   sampling=request.sampling,
                   decode_codebooks=request.num_codebooks or cfg.dep_q,
                   audio_lag=tts.delay_steps,
                   first_output_frame=tts.delay_steps + DROPPED_FRAMES,
                   stop_tail=tts.delay_steps + tts.final_padding - 1,
                   max_steps=tts.max_gen_length, cut_at_end=True, reads_proposal=True,
                   request=request, model=model, limits=request.limits)
        mode.padding_bonus = request.padding_bonus
        mode.audio_forced_until = tts.delay_steps
        mode.num_codebooks = request.num_codebooks
        mode.decode_from = tts.delay_steps  # frames before carry no audio
        return mode

    @classmethod
    def for_moshi(cls, cfg: Any, tokenizer: WordEncoder, audio_delay_frames: int, sampling,
                  num_codebooks: int | None = None, max_steps: int = 30_000,
                  limits: RequestLimits | None = None) -> SynthesisMode:
        """On a Moshi-architecture LM (``LMConfig``), the audio delayed ``audio_delay_frames``
        behind the forced text."""
        shift = audio_delay_frames
        delays = (cfg.delays[0], *(d + shift for d in cfg.delays[1:1 + cfg.dep_q]),
                  *cfg.delays[1 + cfg.dep_q:])
        return cls(StateMachineConfig(card=cfg.text_card + 1, max_padding=0),
                   ScriptBuilder(tokenizer, multi_speaker=False), sampling=sampling,
                   decode_codebooks=num_codebooks or cfg.dep_q, audio_lag=0,
                   first_output_frame=0, stop_tail=max(delays) + MOSHI_FINAL_PADDING,
                   max_steps=max_steps, cut_at_end=False, delays=delays, limits=limits)

    # ---- self-paced session ---------------------------------------------------------------

    def accept_input(self, text: str) -> str:
        """On the client's side, before a chunk is queued: InvalidInput for text past the
        request's limits (length, breaks), so it is refused before any work."""
        self._check.push(text)
        return text

    @property
    def wants_input(self) -> bool:
        """Takes in another chunk only while little raw text waits (back-pressure)."""
        return self._unread_chars < TEXT_BUFFER_CHARS

    def absorb(self, text: str) -> None:
        self._unread.append(text)
        self._unread_chars += len(text)
        self._refill()

    @property
    def input_ended(self) -> bool:
        return self._end_requested

    def end_input(self) -> None:
        self._end_requested = True
        self._refill()

    def _refill(self) -> None:
        """Raw text -> words for the state machine, only while it needs more to step."""
        machine = self.machine
        while machine.needs_text and self._unread:
            text = self._unread.popleft()
            if len(text) > TEXT_PIECE_CHARS:
                text, rest = text[:TEXT_PIECE_CHARS], text[TEXT_PIECE_CHARS:]
                self._unread.appendleft(rest)
            self._unread_chars -= len(text)
            machine.add(self.builder.push(text))
        if self._end_requested and not self._unread and not machine.input_ended:
            machine.add(self.builder.finish())
            machine.end_input()

    @property
    def last_step(self) -> int:
        """The step after which the session stops (known once end_step is)."""
        end, limit = self.machine.end_step, self.max_steps - 1
        return limit if end is None else min(limit, end + self.stop_tail)

    @property
    def done(self) -> bool:
        return self.steps > self.last_step

    def can_step(self) -> bool:
        return not self.done and not self.machine.needs_text

    def waiting_output(self) -> SynthesisChunk | None:
        """Told once per wait: the next step needs text that has not arrived."""
        if self._reported_wait or not self.machine.needs_text or self.done:
            return None
        self._reported_wait = True
        return SynthesisChunk(np.zeros(0, np.float32), [], True, self._seconds_sent)

    # ---- Mode -----------------------------------------------------------------------------

    def start(self, stepper, slot: int) -> None:
        if self.model is None:
            return
        values = {k: [v] for k, v in self.request.condition_values().items()}
        conditions = self.model.conditions(values, [list(self.request.voices)])
        index = torch.tensor([slot], device=stepper.device)
        self.model.set_conditions(stepper.state.transformer, conditions, index)

    def choose_text(self, proposed: int | None) -> int:
        self.steps += 1
        self._reported_wait = False
        fed = self.machine.step(TEXT_PAD if proposed is None else proposed).token
        self._refill()
        for word in self.machine.transcript[self._fed_words:]:
            start = max(0, word.step + self.audio_lag - self.first_output_frame) / FRAME_RATE
            self._pending.append(SpokenWord(word.text, word.step, start))
        self._fed_words = len(self.machine.transcript)
        return fed

    def output(self, result: RowResult) -> SynthesisChunk | None:
        audio = np.zeros(0, np.float32)
        if result.frame is not None:
            index, self.frames = self.frames, self.frames + 1
            end = self.machine.end_step
            emitted = index >= self.first_output_frame and (
                not self.cut_at_end or end is None or index < self.first_output_frame + end)
            if emitted and result.pcm is not None:
                audio = np.clip(result.pcm, -1.0, 1.0)
                self._frames_sent += 1
        done, sent = self.done, self._seconds_sent
        ready = [w for w in self._pending if done or w.start < sent]
        self._pending = self._pending[len(ready):]
        if len(audio) or ready or done:
            return SynthesisChunk(audio, ready, False, sent, done)
        return None

    @property
    def _seconds_sent(self) -> float:
        return self._frames_sent / FRAME_RATE


def check_request(model: Any, request: TTSRequest, voice_length: int | None) -> None:
    """Raises ValueError for a request a Kyutai TTS model cannot run (before taking a slot)."""
    cfg = model.cfg
    n_q = request.num_codebooks or cfg.dep_q
    if not 1 <= n_q <= cfg.dep_q:
        raise ValueError(f"num_codebooks must be in 1..{cfg.dep_q}, got {n_q}")
    if not cfg.extra.get("cross_attention"):
        return
    voices = [v for v in request.voices if v is not None]
    provider = model.condition_provider
    if not voices or len(request.voices) > provider.cfg.max_speakers:
        raise ValueError(f"this model needs 1 to {provider.cfg.max_speakers} voices")
    (name,) = provider.cfg.cross
    dim = provider.conditioners[name].output_proj.in_features
    for voice in voices:
        if tuple(voice.shape) != (1, dim, voice_length):
            raise ValueError(f"voice of shape {tuple(voice.shape)}; this server takes "
                             f"voices of shape {(1, dim, voice_length)}")
