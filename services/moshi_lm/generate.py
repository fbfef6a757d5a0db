"""Streaming generation with the Moshi LM for B independent sessions at once
(docs/architecture.md §2.6).

Each session has its own delay vector (one per stream: text, then n_q audio codebooks), so one
set of weights runs Moshi's delays, text delayed behind audio (ASR) or audio behind text (TTS)
side by side in one batch. Stream k at step s holds the token of time s - delay_k.

The token cache is a ring of ``CT = max_delay + 2`` positions per stream, filled with
UNGENERATED (-2) for "not known yet". At call t (each session has its own t):
1. tokens given for time t (the input streams, and generated streams the caller forces) are
   written at position t + delay_k;
2. the input of stream k is its initial token while t <= delay_k, else position t;
3. the temporal transformer runs one step; text and then the depformer's audio codebooks are
   chosen for position t + 1 (sampled where that position is still UNGENERATED, so forced
   tokens win);
4. the returned frame is de-delayed: stream k is read at t + 1 - max_delay + delay_k, so text
   and all codebooks describe the same instant and the frame is decodable at once. Nothing
   valid is returned for the first max_delay calls;
5. positions no stream will read again are reset to UNGENERATED.

Sampling uses counter-based noise keyed by (session seed, session step, stream), so a session's
tokens do not depend on the other sessions in the batch (see ``services.core.sampling``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch
from torch import Tensor

from services.core.constants import UNGENERATED_TOKEN
from services.core.sampling import HashedNoise, SamplingParams, sample, seed_keys, step_keys
from services.core.streaming import StreamingState
from services.core.transformer import TransformerState
from services.moshi_lm.model import LMModel, TemporalOutput


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """One session's sampling choices. Temperature <= 0 means greedy."""

    text_temperature: float = 0.7
    text_top_k: int = 25
    audio_temperature: float = 0.8
    audio_top_k: int = 250
    seed: int = 0

    @classmethod
    def greedy(cls) -> SamplingSettings:
        return cls(text_temperature=0.0, audio_temperature=0.0)

    @classmethod
    def from_lm_gen_config(cls, config: dict[str, Any], seed: int = 0) -> SamplingSettings:
        """From a checkpoint's ``lm_gen_config`` (keys temp, temp_text, top_k, top_k_text,
        use_sampling); missing keys keep Kyutai's LMGen defaults."""
        if config.get("use_sampling", True) is False:
            return dataclasses.replace(cls.greedy(), seed=seed)
        default = cls()
        return cls(text_temperature=config.get("temp_text", default.text_temperature),
                   text_top_k=config.get("top_k_text", default.text_top_k),
                   audio_temperature=config.get("temp", default.audio_temperature),
                   audio_top_k=config.get("top_k", default.audio_top_k), seed=seed)


@dataclasses.dataclass
class SessionSettings:
    """Per-session parameters, set when a session starts and kept by ``LMState.reset``."""

    delays: Tensor  # [B, 1 + n_q]
    max_delay: Tensor  # [B]
    seed: Tensor  # [B] int64
    seed_key: Tensor  # [B] int64: ``seed_keys(seed)``, the constant part of the noise keys
    text: SamplingParams
    audio: SamplingParams


@dataclasses.dataclass
class LMState(StreamingState):
    transformer: TransformerState
    depformer: TransformerState | None  # scratch, rewound at every frame
    cache: Tensor  # [B, 1 + n_q, CT] tokens by delayed position, UNGENERATED = unknown
    offset: Tensor  # [B] calls made by each session
    settings: SessionSettings  # not a StreamingState: reset leaves it alone

    @property
    def fresh_values(self) -> dict[str, object]:
        return {"cache": UNGENERATED_TOKEN}

    @property
    def capacity(self) -> int:
        return self.cache.shape[-1]


@dataclasses.dataclass
class StepContext:
    """What ``begin`` hands to ``finish``: the temporal outputs of the step being made."""

    temporal: TemporalOutput
    offset: Tensor  # [B] the sessions' step index t
    active: Tensor | None
    forced_any: bool  # some generated token of this frame may already be known
    seed_keys: Tensor  # [B] the sessions' ``seed_keys``
    num_streams: int  # generated streams
    keys: Tensor | None = None  # [B, num_streams] noise keys, built on first use

    def noise(self, stream: int) -> HashedNoise:
        """The sessions' noise for one generated stream at their own step: draws that do not
        depend on the rest of the batch (``session_keys`` of their seeds and steps)."""
        if self.keys is None:
            self.keys = step_keys(self.seed_keys, self.offset, self.num_streams)
        return HashedNoise(self.keys[:, stream])


@dataclasses.dataclass
class StepResult:
    text: Tensor  # [B] text token chosen at this call
    audio: Tensor  # [B, dep_q] audio tokens chosen at this call
    frame: Tensor  # [B, 1 + dep_q] de-delayed output frame (UNGENERATED where not valid)
    valid: Tensor  # [B] bool: ``frame`` holds a frame
    text_logits: Tensor | None = None  # [B, text_vocab] float32
    audio_logits: Tensor | None = None  # [B, dep_q, card] float32
    extra_probs: Tensor | None = None  # [B, heads, extra_heads_dim] float32


class LMGenerator:
    """The streaming step around an ``LMModel``. Holds no session state itself."""

    def __init__(self, model: LMModel, kv_dtype: torch.dtype | None = None):
        """``kv_dtype``: the temporal transformer's KV ring dtype (default: the compute
        dtype). ``torch.bfloat16`` beside fp32 compute halves the bytes attention reads at
        every step (a long session's ring is ~200 MB per STT-1B session in fp32); keys and
        values are then rounded to bf16 as they are stored, so tokens may differ from the
        fp32 ring's, as any quantization's."""
        self.model = model
        self.cfg = model.cfg
        weight = model.text_linear.weight
        self.device, self.dtype = weight.device, _compute_dtype(model)
        self.kv_dtype = kv_dtype or self.dtype
        self.initial = torch.tensor(self.cfg.initial_tokens, device=self.device)

    def init_state(self, batch_size: int, settings: SamplingSettings | None = None,
                   delays: tuple[int, ...] | None = None, max_delay: int | None = None,
                   **temporal_options: Any) -> LMState:
        """A state for ``batch_size`` sessions, all started with ``settings`` (default: the
        checkpoint's lm_gen_config) and ``delays`` (default: the checkpoint's). ``max_delay``
        bounds the delays any session of this state may use later (sizes the ring).
        ``temporal_options`` go to the model's ``init_temporal_state`` (e.g. the TTS model's
        voice_length)."""
        cfg = self.cfg
        delays = tuple(delays or cfg.delays)
        capacity = max(max_delay or 0, max(delays), cfg.max_delay) + 2
        device = self.device
        sess = SessionSettings(
            delays=torch.zeros(batch_size, cfg.num_streams, dtype=torch.long, device=device),
            max_delay=torch.zeros(batch_size, dtype=torch.long, device=device),
            seed=torch.zeros(batch_size, dtype=torch.long, device=device),
            seed_key=torch.zeros(batch_size, dtype=torch.long, device=device),
            text=SamplingParams.create(batch_size, device=device),
            audio=SamplingParams.create(batch_size, device=device))
        state = LMState(
            transformer=self.model.init_temporal_state(batch_size, device, self.kv_dtype,
                                                       **temporal_options),
            depformer=(self.model.init_depformer_state(batch_size, device, self.dtype)
                       if cfg.dep_q else None),
            cache=torch.full((batch_size, cfg.num_streams, capacity), UNGENERATED_TOKEN,
                             device=device),
            offset=torch.zeros(batch_size, dtype=torch.long, device=device),
            settings=sess)
        self.start(state, None, settings, delays)
        return state

    def start(self, state: LMState, sessions: Tensor | None,
              settings: SamplingSettings | None = None,
              delays: tuple[int, ...] | None = None) -> None:
        """(Re)starts the sessions selected by the boolean mask ``sessions`` [B] (all when
        None): fresh caches, and their own settings and delays."""
        state.reset(sessions)
        self.configure(state, sessions, settings, delays)

    def configure(self, state: LMState, sessions: Tensor | None,
                  settings: SamplingSettings | None = None,
                  delays: tuple[int, ...] | None = None) -> None:
        """Gives the sessions ``sessions`` [B] (all when None) their settings and delays,
        leaving their caches alone: ``start`` without the reset, for a caller that resets
        several joining sessions in one call (each reset touches the whole state)."""
        cfg = self.cfg
        settings = settings or SamplingSettings.from_lm_gen_config(cfg.lm_gen_config)
        delays = tuple(delays or cfg.delays)
        if len(delays) != cfg.num_streams or min(delays) < 0:
            raise ValueError(f"need {cfg.num_streams} delays >= 0, got {delays}")
        if max(delays) + 2 > state.capacity:
            raise ValueError(f"delay {max(delays)} exceeds this state's max_delay "
                             f"{state.capacity - 2}")
        rows = slice(None) if sessions is None else sessions
        sess = state.settings
        sess.delays[rows] = torch.tensor(delays, device=self.device)
        sess.max_delay[rows] = max(delays)
        sess.seed[rows] = settings.seed
        sess.seed_key[rows] = seed_keys(torch.tensor(settings.seed, device=self.device))
        sess.text.set(sessions, settings.text_temperature, settings.text_top_k)
        sess.audio.set(sessions, settings.audio_temperature, settings.audio_top_k)

    # ---- one step ---------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, state: LMState, user_codes: Tensor | None = None,
             forced: Tensor | None = None, active: Tensor | None = None,
             return_logits: bool = False) -> StepResult:
        """One call for every session. user_codes [B, >= n_q - dep_q]: the input codebooks at
        time t (extra codebooks are ignored). forced [B, 1 + dep_q]: generated streams given
        at time t instead of sampled (UNGENERATED where not given). active [B]: sessions
        that take part (the others are left untouched)."""
        ctx = self.begin(state, user_codes, forced, active)
        sess = state.settings
        text = sample(ctx.temporal.text_logits[:, 0], sess.text, partial(ctx.noise, 0))
        return self.finish(state, ctx, text, return_logits=return_logits)

    @torch.inference_mode()
    def begin(self, state: LMState, user_codes: Tensor | None = None,
              forced: Tensor | None = None, active: Tensor | None = None) -> StepContext:
        """Steps 1-2 of the module docstring and the temporal transformer. Use ``begin`` and
        ``finish`` instead of ``step`` to choose the text token yourself (TTS)."""
        cfg, sess = self.cfg, state.settings
        batch, gen = state.offset.shape[0], cfg.num_generated
        offset = state.offset.clone()
        given = torch.full((batch, cfg.num_streams), UNGENERATED_TOKEN, device=self.device)
        if cfg.num_input_codebooks:
            if user_codes is None or user_codes.shape[-1] < cfg.num_input_codebooks:
                raise ValueError(f"need user codes [B, {cfg.num_input_codebooks}]")
            given[:, gen:] = user_codes[:, :cfg.num_input_codebooks]
        if forced is not None:
            given[:, :gen] = forced
        write = given != UNGENERATED_TOKEN
        if active is not None:
            write &= active[:, None]
        self._write(state, offset[:, None] + sess.delays, given, write)
        stored = self._read(state, offset[:, None].expand(-1, cfg.num_streams))
        tokens = torch.where(offset[:, None] <= sess.delays, self.initial, stored)
        temporal = self.model.temporal(self.model.embed(tokens[:, None]), state.transformer,
                                       active)
        return StepContext(temporal, offset, active, forced is not None, sess.seed_key,
                           cfg.num_generated)

    @torch.inference_mode()
    def finish(self, state: LMState, ctx: StepContext, text: Tensor,
               audio: Tensor | None = None, return_logits: bool = False,
               audio_complete: bool = False) -> StepResult:
        """Chooses the frame at position t + 1: ``text`` [B] (and ``audio`` [B, dep_q], with
        UNGENERATED entries sampled) unless forced earlier; samples the remaining audio with
        the depformer; advances; returns the de-delayed frame. ``audio_complete``: the caller
        knows ``audio`` has no UNGENERATED entry, so the depformer is skipped without the
        device-to-host check of that."""
        cfg = self.cfg
        offset, active = ctx.offset, ctx.active
        next_pos = (offset + 1)[:, None].expand(-1, cfg.num_generated)
        known = self._read(state, next_pos)  # forced earlier through `forced`
        if audio is not None:
            known[:, 1:] = torch.where(known[:, 1:] == UNGENERATED_TOKEN, audio, known[:, 1:])
        text = torch.where(known[:, 0] == UNGENERATED_TOKEN, text, known[:, 0])
        if audio_complete and audio is not None:
            chosen, audio_logits = known[:, 1:], None
        else:
            chosen, audio_logits = self._depth(state, ctx, text, known[:, 1:], return_logits,
                                               check_known=ctx.forced_any or audio is not None)
        frame = torch.cat([text[:, None], chosen], dim=1)
        self._write(state, next_pos, frame, _column(active))
        state.offset += 1 if active is None else active.long()
        return StepResult(text=text, audio=chosen, **self._output(state, offset, active),
                          text_logits=ctx.temporal.text_logits[:, 0] if return_logits else None,
                          audio_logits=audio_logits,
                          extra_probs=(None if ctx.temporal.extra_probs is None
                                       else ctx.temporal.extra_probs[:, 0]))

    def _depth(self, state: LMState, ctx: StepContext, text: Tensor, known: Tensor,
               return_logits: bool, check_known: bool) -> tuple[Tensor, Tensor | None]:
        """Audio codebooks of the frame, one depformer step each; known tokens are kept and
        fed to the next step."""
        cfg, sess = self.cfg, state.settings
        if not cfg.dep_q or (check_known and not bool((known == UNGENERATED_TOKEN).any())):
            return known, None
        projected = self.model.depformer_inputs(ctx.temporal.hidden[:, 0])
        unknown = known == UNGENERATED_TOKEN  # once for all codebooks: a fixed cost per step
        previous, tokens, all_logits = text, [], []
        for k in range(cfg.dep_q):
            logits = self.model.depth_step(k, projected[:, k], previous, state.depformer)
            token = sample(logits, sess.audio, partial(ctx.noise, 1 + k))
            previous = torch.where(unknown[:, k], token, known[:, k])
            tokens.append(previous)
            all_logits.append(logits)
        logits = torch.stack(all_logits, dim=1) if return_logits else None
        return torch.stack(tokens, dim=1), logits

    def _output(self, state: LMState, offset: Tensor, active: Tensor | None) -> dict[str, Tensor]:
        """De-delayed frame of the generated streams, then frees the positions read for the
        last time (the cache holds UNGENERATED wherever nothing is known)."""
        sess, gen = state.settings, self.cfg.num_generated
        lag = (sess.delays + 1 - sess.max_delay[:, None])  # [B, S], <= 1
        frame = self._read(state, offset[:, None] + lag[:, :gen])
        valid = offset >= sess.max_delay
        if active is not None:
            valid &= active
        frame = torch.where(valid[:, None], frame, UNGENERATED_TOKEN)
        # Stream k's position p is last read at call max(p, p - 1 + max_delay - delay_k).
        done = offset[:, None] + lag.clamp(max=0)
        self._write(state, done, torch.full_like(done, UNGENERATED_TOKEN), _column(active))
        return {"frame": frame, "valid": valid}

    # ---- cache access -------------------------------------------------------------------------

    def _read(self, state: LMState, positions: Tensor) -> Tensor:
        """Tokens at positions [B, n] of streams 0..n-1."""
        slots = (positions % state.capacity)[..., None]
        return state.cache[:, :positions.shape[1]].gather(2, slots)[..., 0]

    def _write(self, state: LMState, positions: Tensor, values: Tensor,
               where: Tensor | None) -> None:
        """Writes values [B, n] at positions [B, n] of streams 0..n-1 where ``where`` [B, n]
        or [B, 1] (None: everywhere)."""
        slots = (positions % state.capacity)[..., None]
        rows = state.cache[:, :positions.shape[1]]
        if where is not None:
            values = torch.where(where, values, rows.gather(2, slots)[..., 0])
        rows.scatter_(2, slots, values[..., None])


def _column(active: Tensor | None) -> Tensor | None:
    return None if active is None else active[:, None]


def _compute_dtype(model: LMModel) -> torch.dtype:
    weight = model.text_emb.weight
    return weight.dtype if weight.is_floating_point() else torch.float32
