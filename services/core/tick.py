"""The tick: every session of one loaded LM (and its codec) stepped together, on the device.

    client audio [n, 1920] --copy in--> Mimi encode (one batched call)
                                              | codes, on the device
    client codes ----------copy in-->   LM step (one batched call; a text hook per session
                                              |  may choose the text token: TTS)
                                              | de-delayed frames, on the device
                                        Mimi decode of the rows that produced audio
                                              | (one batched call per codebook count)
    per-session outputs <--one copy out-- tokens, audio, pause-head probabilities

A session's ``Mode`` (its engine config) says which stages it uses and how: whether its input
is audio (encoded) or codes, where its codes go in the LM (the user's streams, or forced onto
the model's own audio streams), its delays and sampling, whether it chooses its text token
(the TTS word state machine), and how its row of the tick becomes events (``Mode.output``).
Dialogue, recognition and synthesis on a Moshi-architecture LM, on a Kyutai STT or TTS
checkpoint, and the codec and LM services' own streams are all modes of this one stepper.

Rows: slot s owns row s of the LM state (slots below ``max_sessions``) and of the codec's
encoder and decoder states; codec-only sessions (the Mimi service's streams) take the slots
above. Per-session settings live in per-row tensors written at a session's start; the tick
moves tensors between stages on the device and the host sees one copy in per kind of input
and one copy out for the whole batch (``_to_host``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from services.core.constants import FRAME_SIZE, UNGENERATED_TOKEN, ZERO_TOKEN
from services.core.engine import Engine, Events
from services.core.sampling import sample
from services.core.streaming import StreamingState

NEVER = -(1 << 40)  # an audio_forced_until that forces nothing


class Route(enum.Enum):
    """What a session's LM rows are fed."""

    NONE = "none"  # no LM: a codec-only session
    USER = "user"  # its encoded audio on the user's streams (dialogue, Kyutai STT)
    GENERATED = "generated"  # its encoded audio forced onto the model's own audio streams,
    # silence on the user's (recognition on a Moshi-architecture LM)
    HOST = "host"  # ``LMInput``s from the client (the LM service's streams)
    SILENT = "silent"  # no input: silence on the user's streams (synthesis)


@dataclasses.dataclass(frozen=True)
class LMInput:
    """One step's input from a client: the input codebooks [n_q - dep_q] (None only for a
    model without any) and generated streams given instead of sampled ([1 + dep_q],
    UNGENERATED where the model chooses; None: all sampled)."""

    user_codes: np.ndarray | None = None
    forced: np.ndarray | None = None


@dataclasses.dataclass
class RowResult:
    """What one tick computed for one session, on the host."""

    item: Any  # the session's input of this tick
    codes: np.ndarray | None = None  # [K] its audio encoded (codec-only encode sessions)
    text: int | None = None  # text token chosen at this LM step
    frame: np.ndarray | None = None  # [1 + dep_q] the de-delayed frame, when the step gave one
    extra: np.ndarray | None = None  # [heads, dim] pause-head probabilities, when the LM has them
    pcm: np.ndarray | None = None  # [1920] decoded audio, when a frame was decoded
    first: RowResult | None = None  # the extra LM step of a first frame fed twice


class Mode:
    """How one session uses the tick. Subclasses set the class attributes they need and
    override the hooks; an instance is one session's config and per-session host state."""

    route: Route = Route.NONE
    encode_codebooks: int = 0  # > 0: the input is 1920-sample float32 frames, encoded
    decode_codebooks: int = 0  # > 0: audio codes (the LM's, or the client's) are decoded
    feed_first_frame_twice: bool = False  # Kyutai's STT framing (the LM ignores step 0)
    reads_text_proposal: bool = False  # choose_text needs the model's proposed token
    chooses_text: bool = False  # choose_text decides the text token of every step
    self_paced: bool = False  # stepped without input while can_step() (synthesis)
    sampling: Any = None  # SamplingSettings (None: the checkpoint's)
    delays: tuple[int, ...] | None = None  # None: the checkpoint's
    padding_bonus: float = 0.0  # added to the PAD logit before sampling
    audio_forced_until: int = NEVER  # audio codebook q is ZERO while step < this + delay_q
    num_codebooks: int | None = None  # generated audio codebooks, the rest ZERO (None: all)
    decode_from: int = 0  # index of the first de-delayed frame decoded

    @property
    def uses_sampled_audio(self) -> bool:
        """Whether the audio codebooks the depformer samples for this session matter. Not for
        recognition on a Moshi-architecture LM (route GENERATED, nothing decoded): its own
        audio streams are forced from its input, and the step after overwrites a codebook
        sampled at this step (the only ones not yet forced) before anything reads it. A tick
        whose sessions all do without skips the depformer."""
        return not (self.route is Route.GENERATED and not self.decode_codebooks)

    def is_data(self, item: Any) -> bool:
        """Whether ``item`` goes through the model (else it only passes through, in order:
        a marker)."""
        return True

    def pass_through(self, item: Any) -> Any:
        """The outputs of an input that needs no model step (see ``is_data``), answered by
        the engine as soon as it is taken; None for model inputs."""
        return None if self.is_data(item) else self.output(RowResult(item))

    def start(self, stepper: SpeechStepper, slot: int) -> None:
        """Extra state of the session's rows, set on the engine thread (conditions)."""

    def choose_text(self, proposed: int | None) -> int:
        """The text token of this step (``proposed``: the model's, if reads_text_proposal)."""
        raise TypeError(f"{type(self).__name__} does not choose its text: only modes with "
                        "chooses_text are asked")

    def output(self, result: RowResult) -> Any:
        """The session's outputs of one tick: one output, or ``Events``."""
        return result

    def end(self) -> Events:
        """The last outputs once the input is over (e.g. the word still open)."""
        return Events()


class SpeechStepper:
    """The engine's model side for one loaded LM and / or codec (see the module docstring)."""

    def __init__(self, max_sessions: int, lm: Any = None, codec: Any = None,
                 max_delay: int | None = None, **temporal_options: Any):
        """``lm``: an LMGenerator (None: a codec-only engine); ``codec``: a MimiModel (None:
        LM streams only). ``max_delay`` bounds the delays sessions may bring (default: the
        checkpoint's); ``temporal_options`` size the LM state (the TTS voice length)."""
        if lm is None and codec is None:
            raise ValueError("a stepper needs an LM, a codec or both")
        self.lm, self.codec, self.max_sessions = lm, codec, max_sessions
        self.lm_rows = max_sessions if lm is not None else 0
        # Codec-only streams (the Mimi service's) get their own slots: with an LM as many as
        # LM sessions; a codec-only server holds an encoder and a decoder per dialogue.
        codec_only = 0 if codec is None else max_sessions * (1 if lm is not None else 2)
        self.num_slots = self.lm_rows + codec_only
        self.modes: list[Mode | None] = [None] * self.num_slots
        self._first_pending = [False] * self.num_slots
        device = lm.device if lm is not None else codec.device
        self.device = device
        self._mask = torch.zeros(self.num_slots, dtype=torch.bool, device=device)
        if codec is not None:
            self.encoder_state = codec.init_encoder_state(self.num_slots, device)
            self.decoder_state = codec.init_decoder_state(self.num_slots, device)
            self._pcm = torch.zeros(self.num_slots, 1, FRAME_SIZE, device=device,
                                    dtype=codec.dtype)
            self._codes = torch.zeros(self.num_slots, codec.cfg.max_codebooks, 1,
                                      dtype=torch.long, device=device)
        if lm is not None:
            self._init_lm(lm, max_delay, temporal_options)

    def _init_lm(self, lm: Any, max_delay: int | None, temporal_options: dict) -> None:
        cfg, rows, device = lm.cfg, self.lm_rows, self.device
        self.cfg = cfg
        self.state = lm.init_state(rows, max_delay=max_delay, **temporal_options)
        self._lm_mask = torch.zeros(rows, dtype=torch.bool, device=device)
        self._user = torch.zeros(rows, cfg.num_input_codebooks, dtype=torch.long, device=device)
        self._forced = torch.full((rows, cfg.num_generated), UNGENERATED_TOKEN,
                                  dtype=torch.long, device=device)
        # Per-session settings of the text hook and audio forcing, written at start.
        self._padding_bonus = torch.zeros(rows, device=device)
        self._audio_forced_until = torch.full((rows,), NEVER, dtype=torch.long, device=device)
        self._num_codebooks = torch.full((rows,), cfg.dep_q, dtype=torch.long, device=device)
        self._decode_from = torch.zeros(rows, dtype=torch.long, device=device)
        self._codebook_delays = torch.tensor(cfg.delays[1:1 + cfg.dep_q], dtype=torch.long,
                                             device=device)
        self._codebook = torch.arange(cfg.dep_q, device=device)
        self.silence = self._silence_codes() if self.codec is not None else None

    @property
    def max_delay(self) -> int:
        return self.state.capacity - 2

    @property
    def lm_slots(self) -> range:
        return range(self.lm_rows)

    @property
    def codec_slots(self) -> range:
        return range(self.lm_rows, self.num_slots)

    @property
    def encoder_slots(self) -> range:
        """The codec-only slots of encoding streams (all of them next to an LM; the first
        half on a codec-only engine, as many encoders as decoders)."""
        slots = self.codec_slots
        return slots if self.lm is not None else slots[:len(slots) // 2]

    @property
    def decoder_slots(self) -> range:
        slots = self.codec_slots
        return slots if self.lm is not None else slots[len(slots) // 2:]

    def slots_for(self, mode: Mode) -> range:
        """The slots a session of ``mode`` may take."""
        if mode.route is not Route.NONE:
            return self.lm_slots
        return self.encoder_slots if mode.encode_codebooks else self.decoder_slots

    def _silence_codes(self) -> Tensor:
        """Codes [n_q - dep_q] of one silent frame from a fresh encoder: what the user's
        streams hear in recognition and synthesis on a Moshi-architecture LM."""
        state = self.codec.init_encoder_state(1, self.device)
        zeros = torch.zeros(1, 1, FRAME_SIZE, device=self.device, dtype=self.codec.dtype)
        with torch.inference_mode():
            codes = self.codec.encode_step(zeros, state,
                                           num_codebooks=self.codec.cfg.max_codebooks)
        return codes[0, :self.cfg.num_input_codebooks, 0].clone()

    # ---- Stepper ------------------------------------------------------------------------------

    def start(self, slots: Sequence[int], configs: Sequence[Mode]) -> None:
        # Fresh rows for every joining session in one reset per state (a reset touches the
        # whole batch: a burst of joins costs one, not one per session).
        if self.codec is not None:
            mask = self._rows_mask(self._mask, slots)
            self.encoder_state.reset(mask)
            self.decoder_state.reset(mask)
        lm_slots = [s for s, m in zip(slots, configs, strict=True) if m.route is not Route.NONE]
        if lm_slots:
            self.state.reset(self._rows_mask(self._lm_mask, lm_slots))
        for slot, mode in zip(slots, configs, strict=True):
            self.modes[slot] = mode
            self._first_pending[slot] = mode.feed_first_frame_twice
            if mode.route is not Route.NONE:
                self._start_lm_row(slot, mode)
            mode.start(self, slot)

    def _start_lm_row(self, slot: int, mode: Mode) -> None:
        # Settings differ per session, so one call per joining session (not per step).
        self.lm.configure(self.state, self._rows_mask(self._lm_mask, [slot]), mode.sampling,
                          mode.delays)
        self._padding_bonus[slot] = mode.padding_bonus
        self._audio_forced_until[slot] = mode.audio_forced_until
        self._num_codebooks[slot] = mode.num_codebooks or self.cfg.dep_q
        self._decode_from[slot] = mode.decode_from

    def end(self, slot: int) -> Events:
        mode, self.modes[slot] = self.modes[slot], None
        return mode.end() if mode is not None else Events()

    def step(self, slots: Sequence[int], inputs: Sequence[Any]) -> list[Any]:
        """The tick: encode -> LM -> decode over the sessions given, then one copy out."""
        modes = [self.modes[s] for s in slots]
        data = [i for i, (m, x) in enumerate(zip(modes, inputs, strict=True)) if m.is_data(x)]
        out: dict[str, Tensor] = {}
        encoded = self._encode([i for i in data if modes[i].encode_codebooks], slots, inputs,
                               modes, out)
        lm_rows = [i for i in data if modes[i].route is not Route.NONE]
        twice = [i for i in lm_rows if self._first_pending[slots[i]]]
        lm = None
        if lm_rows:
            lm = self._lm_step(lm_rows, twice, slots, inputs, modes, encoded, out)
        decoding = [i for i in data if modes[i].decode_codebooks]
        if decoding:
            self._decode(decoding, slots, inputs, modes, lm, out)
        host = self._to_host(out)
        results = [RowResult(item) for item in inputs]
        for j, i in enumerate(i for i in data if modes[i].encode_codebooks
                              and modes[i].route is Route.NONE):
            results[i].codes = host["codes"][j, :modes[i].encode_codebooks].astype(np.int64)
        for j, i in enumerate(lm_rows):
            _fill_lm(results[i], host, "lm", j)
        for j, i in enumerate(twice):
            results[i].first = _fill_lm(RowResult(inputs[i]), host, "first", j)
        for j, i in enumerate(decoding):
            if host["decoded"][j]:
                results[i].pcm = host["pcm"][j]
        return [mode.output(result) for mode, result in zip(modes, results, strict=True)]

    # ---- stages ---------------------------------------------------------------------------

    def _encode(self, rows: list[int], slots: Sequence[int], inputs: Sequence[Any],
                modes: Sequence[Mode], out: dict[str, Tensor]) -> Tensor | None:
        """Codes [n, K] on the device of the sessions at batch positions ``rows``."""
        if not rows:
            return None
        index = [slots[i] for i in rows]
        self._pcm[index, 0] = torch.from_numpy(np.stack([inputs[i] for i in rows])).to(
            self._pcm)
        n = max(index) + 1  # idle rows above the highest busy one stay out of the forward
        # Residual quantization is sequential: the first k' codes of a k-code frame are the
        # k'-code frame, so one call serves sessions asking for different counts.
        k = max(modes[i].encode_codebooks for i in rows)
        codes = self.codec.encode_step(self._pcm[:n], _first(self.encoder_state, n, self.num_slots),
                                       self._active(self._mask, index, n),
                                       num_codebooks=k)[:, :, 0]
        if codec_only := [slots[i] for i in rows if modes[i].route is Route.NONE]:
            out["codes"] = codes[codec_only]
        return codes

    def _lm_step(self, rows: list[int], twice: list[int], slots: Sequence[int],
                 inputs: Sequence[Any], modes: Sequence[Mode], encoded: Tensor | None,
                 out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The LM step of the sessions at batch positions ``rows``; those in ``twice`` are
        stepped once more before, on the same input (their first frame)."""
        index = [slots[i] for i in rows]
        self._lm_inputs(rows, slots, inputs, modes, encoded)
        forced = self._forced if any(modes[i].route in (Route.GENERATED, Route.HOST)
                                     for i in rows) else None
        if twice:  # the first frame's extra step, before its own
            first = self._lm_call([slots[i] for i in twice], [], modes, slots, forced,
                                  any(modes[i].uses_sampled_audio for i in twice))
            for i in twice:
                self._first_pending[slots[i]] = False
            out.update({f"first_{k}": v[[slots[i] for i in twice]] for k, v in first.items()})
        result = self._lm_call(index, [i for i in rows if modes[i].chooses_text], modes, slots,
                               forced, any(modes[i].uses_sampled_audio for i in rows))
        out.update({f"lm_{k}": v[index] for k, v in result.items()})
        return result

    def _lm_inputs(self, rows: list[int], slots: Sequence[int], inputs: Sequence[Any],
                   modes: Sequence[Mode], encoded: Tensor | None) -> None:
        """Writes each session's row of the LM's inputs, by route (one device copy each)."""
        cfg = self.cfg
        by_route: dict[Route, list[int]] = {}
        for i in rows:
            by_route.setdefault(modes[i].route, []).append(i)
        n_in, dep_q = cfg.num_input_codebooks, cfg.dep_q
        if any(r in by_route for r in (Route.GENERATED, Route.HOST)):
            self._forced.fill_(UNGENERATED_TOKEN)
        if user := by_route.get(Route.USER):
            self._user[[slots[i] for i in user]] = encoded[[slots[i] for i in user], :n_in]
        if generated := by_route.get(Route.GENERATED):
            index = [slots[i] for i in generated]
            self._forced[index, 1:] = encoded[index, :dep_q]
            if n_in:
                self._user[index] = self.silence
        if (silent := by_route.get(Route.SILENT)) and n_in:
            self._user[[slots[i] for i in silent]] = self.silence
        if host := by_route.get(Route.HOST):
            index = [slots[i] for i in host]
            steps = [x if isinstance(x, LMInput) else LMInput(user_codes=x)
                     for x in (inputs[i] for i in host)]
            if n_in:
                self._user[index] = torch.from_numpy(
                    np.stack([x.user_codes for x in steps])).to(self._user)
            given = [(s, x.forced) for s, x in zip(index, steps, strict=True)
                     if x.forced is not None]
            if given:
                self._forced[[s for s, _ in given]] = torch.from_numpy(
                    np.stack([f for _, f in given])).to(self._forced)

    def _lm_call(self, index: list[int], hooked: list[int], modes: Sequence[Mode],
                 slots: Sequence[int], forced: Tensor | None, sample_audio: bool = True
                 ) -> dict[str, Tensor]:
        """One LM step of the rows ``index``; ``hooked``: batch positions whose mode chooses
        its text token; ``sample_audio`` False: no row uses the sampled audio (see
        ``Mode.uses_sampled_audio``), so placeholders stand in for it and the depformer is
        skipped. Returns the step's device tensors over the first n rows."""
        lm, n = self.lm, max(index) + 1
        state = _first(self.state, n, self.lm_rows)
        active = self._active(self._lm_mask, index, n)
        ctx = lm.begin(state, self._user[:n], None if forced is None else forced[:n], active)
        logits = ctx.temporal.text_logits[:, 0]
        if any(modes[i].padding_bonus for i in hooked):
            logits[:, self.cfg.existing_text_padding_id] += self._padding_bonus[:n]
        text = sample(logits, state.settings.text, partial(ctx.noise, 0))
        if hooked:
            text = self._text_hook(text, hooked, modes, slots)
        audio = None
        if not sample_audio:
            audio = torch.full((n, self.cfg.dep_q), ZERO_TOKEN, device=self.device)
        elif any(modes[i].audio_forced_until != NEVER or modes[i].num_codebooks
                 for i in hooked):
            offset = ctx.offset[:, None]
            silent = (offset < self._audio_forced_until[:n, None] + self._codebook_delays) \
                | (self._codebook >= self._num_codebooks[:n, None])
            audio = torch.where(silent, ZERO_TOKEN, UNGENERATED_TOKEN)
        result = lm.finish(state, ctx, text, audio, audio_complete=not sample_audio)
        step = {"text": result.text, "frame": result.frame, "valid": result.valid,
                # index of the de-delayed frame each row returns (when valid)
                "frame_index": ctx.offset - state.settings.max_delay}
        if result.extra_probs is not None:
            step["extra"] = result.extra_probs
        return step

    def _text_hook(self, text: Tensor, hooked: list[int], modes: Sequence[Mode],
                   slots: Sequence[int]) -> Tensor:
        """The text tokens chosen by the sessions' modes (the TTS word state machines run on
        the host: one copy out of the proposals and one copy in of the choices, per tick)."""
        index = [slots[i] for i in hooked]
        proposals: list[int | None] = [None] * len(hooked)
        if any(modes[i].reads_text_proposal for i in hooked):
            proposals = text[index].tolist()
        chosen = [modes[i].choose_text(p) for i, p in zip(hooked, proposals, strict=True)]
        text = text.clone()
        text[index] = torch.tensor(chosen).to(text)
        return text

    def _decode(self, rows: list[int], slots: Sequence[int], inputs: Sequence[Any],
                modes: Sequence[Mode], lm: dict[str, Tensor] | None,
                out: dict[str, Tensor]) -> None:
        """Decodes the LM's audio of the rows whose step returned a frame to decode, and the
        codes of codec-only decode sessions: one call per codebook count."""
        index = [slots[i] for i in rows]
        decoded = self._rows_mask(self._mask, index).clone()
        lm_index = [slots[i] for i in rows if modes[i].route is not Route.NONE]
        if lm_index:
            # Rows not decoded this tick may hold placeholders (< 0): any code does for them.
            self._codes[lm_index, :self.cfg.dep_q, 0] = lm["frame"][lm_index, 1:].clamp(min=0)
            due = lm["valid"] & (lm["frame_index"] >= self._decode_from[:len(lm["valid"])])
            decoded[lm_index] = due[lm_index]
        host = [i for i in rows if modes[i].route is Route.NONE]
        for i in host:  # client codes may have fewer codebooks than the buffer
            self._codes[slots[i], :len(inputs[i]), 0] = torch.from_numpy(inputs[i]).to(
                self._codes)
        pcm = torch.zeros(self.num_slots, FRAME_SIZE, device=self.device)
        for k in sorted({modes[i].decode_codebooks for i in rows}):
            group = [slots[i] for i in rows if modes[i].decode_codebooks == k]
            n = max(group) + 1
            mask = self._rows_mask(self._mask, group)[:n] & decoded[:n]
            state = _first(self.decoder_state, n, self.num_slots)
            frames = self.codec.decode_step(self._codes[:n, :k], state, mask)
            pcm[group] = frames[group, 0].float()
        out["pcm"], out["decoded"] = pcm[index], decoded[index]

    # ---- to the host ------------------------------------------------------------------------

    @staticmethod
    def _to_host(out: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """Every output of the tick in one device -> host copy (tokens are exact in float32)."""
        if not out:
            return {}
        names = list(out)
        flat = torch.cat([out[k].reshape(-1).to(device=out[names[0]].device,
                                                dtype=torch.float32) for k in names])
        flat = flat.cpu().numpy()
        host, at = {}, 0
        for k in names:
            size = out[k].numel()
            host[k] = flat[at:at + size].reshape(out[k].shape)
            at += size
        return host

    @classmethod
    def _active(cls, mask: Tensor, rows: Sequence[int], n: int) -> Tensor | None:
        """The ``active`` mask [n] of a stage stepping ``rows`` (distinct slots below n), or
        None when they are all of the first n rows: a full batch, the usual case under load.
        Both give the same results; None spares the stage its per-row selects (keeping the
        idle rows' states and caches), a fixed cost of every layer at every tick."""
        if len(rows) == n:
            return None
        return cls._rows_mask(mask, rows)[:n]

    @staticmethod
    def _rows_mask(mask: Tensor, rows: Sequence[int]) -> Tensor:
        mask.zero_()
        mask[list(rows)] = True
        return mask


def _fill_lm(result: RowResult, host: dict[str, np.ndarray], prefix: str, j: int
             ) -> RowResult:
    """Copies row ``j`` of an LM step's host outputs (``prefix``: "lm" or "first")."""
    result.text = int(host[f"{prefix}_text"][j])
    if host[f"{prefix}_valid"][j]:
        result.frame = host[f"{prefix}_frame"][j].astype(np.int64)
    if f"{prefix}_extra" in host:
        result.extra = host[f"{prefix}_extra"][j]
    return result


def _first(state: StreamingState, n: int, rows: int) -> StreamingState:
    """The first ``n`` of a state's ``rows`` rows (the state itself when that is all)."""
    return state if n == rows else state.first_sessions(n)


def speech_engine(max_sessions: int, lm: Any = None, codec: Any = None, *,
                  max_delay: int | None = None, idle_timeout: float = 30.0, max_queue: int = 8,
                  batch_window: float | None = 0.0, **temporal_options: Any) -> Engine:
    """A started engine stepping every session of ``lm`` (an LMGenerator) and ``codec`` (a
    MimiModel) in one tick: ``max_sessions`` LM sessions (dialogue, recognition, synthesis,
    LM streams) and as many codec-only streams (twice as many without an LM)."""
    stepper = SpeechStepper(max_sessions, lm, codec, max_delay, **temporal_options)
    return Engine("moshi_lm" if lm is not None else "mimi", stepper, stepper.num_slots,
                  max_queue=max_queue, idle_timeout=idle_timeout,
                  batch_window=batch_window).start()
