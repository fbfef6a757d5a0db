"""Streaming speech synthesis for B independent sessions at once (spec §3.3).

Each call of ``TTSGenerator.step`` makes one 12.5 Hz step for the sessions given:

1. the LM's temporal step (``LMGenerator.begin``) with each session's conditions;
2. the proposed text token (sampled with the session's text settings) goes through the
   session's word state machine, which decides the text actually fed (``WordStateMachine``);
3. the depth transformer picks the audio codebooks, forced to -1 ("no audio") while
   ``step < delay_steps + delay_q`` (the audio lags the text by delay_steps) and for the
   codebooks past the session's ``num_codebooks``;
4. the de-delayed frame comes back. Frames from ``delay_steps`` on are audio: they go through
   the codec (``decode``), and all but the first ``DROPPED_FRAMES`` of them (a start-up click)
   up to ``end_step`` are the session's output.

A session stops ``delay_steps + final_padding`` steps after the state machine reached the end
of its text (``end_step``), or at ``max_gen_length``. A word fed at step s is heard at output
time (s - DROPPED_FRAMES) / 12.5 (its audio lags by delay_steps, and the output starts at frame
delay_steps + DROPPED_FRAMES).

Only the state machine is per-session Python (a few operations per session per step); the
model work is one batched call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from services.core.constants import FRAME_RATE, UNGENERATED_TOKEN, ZERO_TOKEN
from services.core.sampling import HashedNoise, sample, session_keys
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.tts.model import TTSConfig, TTSModel
from services.tts.script import ScriptBuilder, TextTokenizer, prepare_script
from services.tts.state_machine import WordStateMachine

DROPPED_FRAMES = 2  # first decoded audio frames left out of the output (a start-up click)
DEFAULT_CONDITIONS = {"control": "ok", "cfg": "2.0"}


@dataclasses.dataclass(frozen=True)
class TTSRequest:
    """One session's settings."""

    voices: tuple[Tensor | None, ...] = ()  # speaker slots, voice embeddings [1, D, T]
    cfg_coef: float = 2.0  # given to the model through its "cfg" condition
    sampling: SamplingSettings | None = None  # None: the checkpoint's lm_gen_config
    num_codebooks: int | None = None  # audio codebooks generated (None: all)
    padding_bonus: float = 0.0  # added to the PAD logit: > 0 speaks slower

    def condition_values(self) -> dict[str, str]:
        return {**DEFAULT_CONDITIONS, "cfg": f"{self.cfg_coef:.1f}"}


@dataclasses.dataclass
class Word:
    text: str
    step: int  # step at which the word was fed
    start: float  # seconds into the session's output audio


@dataclasses.dataclass
class TTSOutput:
    """What one step gave a session."""

    fed: int  # text token fed at this step (muxed with the look-ahead stream)
    frame: np.ndarray | None  # [dep_q] audio codes for the codec, or None (no audio yet)
    emit: bool  # the decoded frame belongs to the output (else: decode it, drop the audio)
    words: list[Word]  # words fed at this step
    done: bool  # the session's last step


class TTSSession:
    """Per-session bookkeeping around the state machine."""

    def __init__(self, machine: WordStateMachine, builder: ScriptBuilder, tts: TTSConfig,
                 request: TTSRequest):
        self.machine, self.builder, self.tts, self.request = machine, builder, tts, request
        self.step = 0  # calls made
        self.frames = 0  # de-delayed frames received

    def push_text(self, text: str) -> None:
        self.machine.add(self.builder.push(text))

    def end_text(self) -> None:
        self.machine.add(self.builder.finish())
        self.machine.end_input()

    @property
    def ready(self) -> bool:
        """False while the next step needs text that has not arrived (the client is slow)."""
        return not self.machine.needs_text

    @property
    def last_step(self) -> int:
        """The step after which the session stops (known once end_step is)."""
        end = self.machine.end_step
        limit = self.tts.max_gen_length - 1
        if end is None:
            return limit
        return min(limit, end + self.tts.delay_steps + self.tts.final_padding - 1)

    @property
    def finished(self) -> bool:
        return self.step > self.last_step

    def output(self, fed: int, frame: np.ndarray | None, words_before: int) -> TTSOutput:
        emit = False
        if frame is not None:
            index = self.frames
            self.frames += 1
            first = self.tts.delay_steps + DROPPED_FRAMES
            end = self.machine.end_step
            emit = index >= first and (end is None or index < first + end)
            if index < self.tts.delay_steps:
                frame = None  # the audio has not started: nothing to decode
        words = [Word(w.text, w.step, max(0, w.step - DROPPED_FRAMES) / FRAME_RATE)
                 for w in self.machine.transcript[words_before:]]
        return TTSOutput(fed, frame, emit, words, self.finished)


class TTSGenerator:
    """Batched synthesis over ``max_sessions`` slots of one TTS model."""

    def __init__(self, model: TTSModel, tokenizer: TextTokenizer, max_sessions: int,
                 voice_length: int | None = None, tts: TTSConfig | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.tts = tts or model.tts_config
        self.lm = LMGenerator(model)
        cfg, device = model.cfg, self.lm.device
        self.state = self.lm.init_state(max_sessions, voice_length=voice_length)
        self.sessions: list[TTSSession | None] = [None] * max_sessions
        self.voice_length = voice_length
        # Per-slot tensors, written in place.
        self._fed = torch.zeros(max_sessions, dtype=torch.long, device=device)
        self._active = torch.zeros(max_sessions, dtype=torch.bool, device=device)
        self._num_codebooks = torch.full((max_sessions,), cfg.dep_q, device=device)
        self._padding_bonus = torch.zeros(max_sessions, device=device)
        # Codebook q's audio is forced to -1 while step < delay_steps + delay_q.
        self._audio_start = torch.tensor(cfg.delays[1:1 + cfg.dep_q], device=device) \
            + self.tts.delay_steps
        self._codebook = torch.arange(cfg.dep_q, device=device)

    def check(self, request: TTSRequest) -> None:
        """Raises ValueError for a request this generator cannot run (before taking a slot)."""
        cfg = self.model.cfg
        n_q = request.num_codebooks or cfg.dep_q
        if not 1 <= n_q <= cfg.dep_q:
            raise ValueError(f"num_codebooks must be in 1..{cfg.dep_q}, got {n_q}")
        if not cfg.extra.get("cross_attention"):
            return
        voices = [v for v in request.voices if v is not None]
        provider = self.model.condition_provider
        if not voices or len(request.voices) > provider.cfg.max_speakers:
            raise ValueError(f"this model needs 1 to {provider.cfg.max_speakers} voices")
        (name,) = provider.cfg.cross
        dim = provider.conditioners[name].output_proj.in_features
        for voice in voices:
            if tuple(voice.shape) != (1, dim, self.voice_length):
                raise ValueError(f"voice of shape {tuple(voice.shape)}; this server takes "
                                 f"voices of shape {(1, dim, self.voice_length)}")

    def start(self, slot: int, request: TTSRequest, turns: Sequence[str] = (),
              end_of_input: bool = True) -> TTSSession:
        """(Re)starts ``slot``: fresh state, the request's conditions, and the script so far,
        one string per turn. Unless ``end_of_input``, more text comes with
        ``TTSSession.push_text``, as the next turn."""
        cfg, tts = self.model.cfg, self.tts
        self.check(request)
        self._active.zero_()
        self._active[slot] = True
        self.lm.start(self.state, self._active, request.sampling)
        values = {k: [v] for k, v in request.condition_values().items()}
        conditions = self.model.conditions(values, [list(request.voices)])
        index = torch.tensor([slot], device=self.lm.device)
        self.model.set_conditions(self.state.transformer, conditions, index)
        self._num_codebooks[slot] = request.num_codebooks or cfg.dep_q
        self._padding_bonus[slot] = request.padding_bonus
        entries = prepare_script(turns, self.tokenizer, tts.padding_between, tts.multi_speaker)
        machine = WordStateMachine(tts.state_machine(cfg.text_card), entries, end_of_input)
        builder = ScriptBuilder(self.tokenizer, len(turns), tts.padding_between,
                                tts.multi_speaker)
        self.sessions[slot] = TTSSession(machine, builder, tts, request)
        return self.sessions[slot]

    @torch.inference_mode()
    def step(self, slots: Sequence[int]) -> list[TTSOutput]:
        """One step of the sessions in ``slots`` (each must be ``ready``)."""
        sessions = [self.sessions[s] for s in slots]
        active, offset = self._active, self.state.offset
        active.zero_()
        active[list(slots)] = True
        ctx = self.lm.begin(self.state, None, None, active)
        logits = ctx.temporal.text_logits[:, 0]
        logits[:, self.model.cfg.existing_text_padding_id] += self._padding_bonus
        seeds = self.state.settings.seed
        # The LM's own text noise (stream 0): the same draws as LMGenerator.step would make.
        proposed = sample(logits, self.state.settings.text,
                          lambda: HashedNoise(session_keys(seeds, ctx.offset, 0)))
        proposed = proposed[list(slots)].tolist()  # the state machines run on the host
        words_before, fed = [], []
        for session, token in zip(sessions, proposed, strict=True):
            words_before.append(len(session.machine.transcript))
            fed.append(session.machine.step(token).token)
            session.step += 1
        index = torch.tensor(slots, device=self._fed.device)
        self._fed[index] = torch.tensor(fed).to(self._fed.device)  # one copy for the batch
        forced = (offset[:, None] < self._audio_start) \
            | (self._codebook >= self._num_codebooks[:, None])
        audio = torch.where(forced, ZERO_TOKEN, UNGENERATED_TOKEN)
        result = self.lm.finish(self.state, ctx, self._fed, audio)
        frames = result.frame[index, 1:].cpu().numpy()
        valid = result.valid[index].tolist()
        return [session.output(fed[i], frames[i] if valid[i] else None, words_before[i])
                for i, session in enumerate(sessions)]
