"""The Moshi LM on the batching engine: every slot is a row of one ``LMState``; each tick runs
one ``LMGenerator.step`` over the sessions that have a frame, the others masked inactive.

A session brings its own configuration (``LMStream``): sampling, seed and delay vector, so
dialogue, ASR (text delayed behind audio) and TTS (audio delayed behind text) sessions share
one loaded model and one batch. Each input may force generated streams (``LMInput.forced``:
the text of TTS, for instance); a plain array is the user's codes of one frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from services.core.constants import UNGENERATED_TOKEN
from services.core.engine import Engine
from services.moshi_lm.generate import LMGenerator, SamplingSettings


@dataclasses.dataclass(frozen=True)
class LMStream:
    """One session's configuration."""

    settings: SamplingSettings
    delays: tuple[int, ...] | None = None  # None: the checkpoint's


@dataclasses.dataclass(frozen=True)
class LMInput:
    """One step's input: the input codebooks [n_q - dep_q] (None only for a model without
    any), and the generated streams given instead of sampled ([1 + dep_q], UNGENERATED where
    the model chooses; None: all sampled)."""

    user_codes: np.ndarray | None = None
    forced: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class LMFrame:
    """One de-delayed output frame of a session."""

    text_token: int
    text: str  # display text ("" for padding or without a tokenizer)
    audio: np.ndarray  # [dep_q] audio codes, decodable by Mimi at once
    extra_probs: np.ndarray | None = None  # [heads, dim] (STT pause heads), when the model has them


class LMStepper:
    def __init__(self, generator: LMGenerator, max_sessions: int,
                 pieces: Sequence[str] | None = None, max_delay: int | None = None):
        """``pieces[token]`` is the display text of each text token; ``max_delay`` bounds the
        delays sessions may bring (default: the checkpoint's)."""
        cfg = generator.cfg
        self.generator, self.cfg, self.pieces = generator, cfg, pieces
        self.state = generator.init_state(max_sessions, max_delay=max_delay)
        device = generator.device
        # Step inputs are written in place each tick: no allocation growth with time.
        self._user = torch.zeros(max_sessions, cfg.num_input_codebooks, dtype=torch.long,
                                 device=device)
        self._forced = torch.full((max_sessions, cfg.num_generated), UNGENERATED_TOKEN,
                                  dtype=torch.long, device=device)
        self._active = torch.zeros(max_sessions, dtype=torch.bool, device=device)

    @property
    def max_delay(self) -> int:
        return self.state.capacity - 2

    def start(self, slots: Sequence[int], configs: Sequence[LMStream]) -> None:
        # Settings differ per session, so one call per joining session (not per step).
        for slot, config in zip(slots, configs, strict=True):
            self._active.zero_()
            self._active[slot] = True
            self.generator.start(self.state, self._active, config.settings, config.delays)

    def step(self, slots: Sequence[int], inputs: Sequence[LMInput | np.ndarray]
             ) -> list[LMFrame | None]:
        inputs = [x if isinstance(x, LMInput) else LMInput(user_codes=x) for x in inputs]
        self._active.zero_()
        self._active[list(slots)] = True
        if self.cfg.num_input_codebooks:
            self._user[slots] = torch.from_numpy(np.stack([x.user_codes for x in inputs])).to(
                self._user)
        forced = None
        if any(x.forced is not None for x in inputs):
            self._forced.fill_(UNGENERATED_TOKEN)
            rows = [(s, x.forced) for s, x in zip(slots, inputs, strict=True)
                    if x.forced is not None]
            self._forced[[s for s, _ in rows]] = torch.from_numpy(
                np.stack([f for _, f in rows])).to(self._forced)
            forced = self._forced
        # Slots are handed out lowest first: stepping rows up to the highest busy one leaves
        # idle capacity out of the forward.
        rows = max(slots) + 1
        state = self.state if rows == len(self._active) else self.state.first_sessions(rows)
        result = self.generator.step(state, self._user[:rows],
                                     None if forced is None else forced[:rows],
                                     self._active[:rows])
        index = list(slots)
        frames = result.frame[index].cpu().numpy()
        valid = result.valid[index].cpu().numpy()
        extra = (None if result.extra_probs is None
                 else result.extra_probs[index].float().cpu().numpy())
        return [self._frame(frames[i], None if extra is None else extra[i]) if valid[i]
                else None for i in range(len(index))]

    def _frame(self, frame: np.ndarray, extra: np.ndarray | None) -> LMFrame:
        token = int(frame[0])
        text = self.pieces[token] if self.pieces is not None else ""
        return LMFrame(token, text, frame[1:], extra)


def lm_engine(generator: LMGenerator, max_sessions: int, pieces: Sequence[str] | None = None,
              idle_timeout: float = 30.0, max_queue: int = 8, max_delay: int | None = None,
              batch_window: float = 0.0) -> Engine:
    """A started engine serving LM sessions of ``generator``'s model; ``max_delay`` bounds
    the delays its sessions may bring (default: the checkpoint's)."""
    stepper = LMStepper(generator, max_sessions, pieces, max_delay)
    return Engine("moshi_lm", stepper, max_sessions, max_queue=max_queue,
                  idle_timeout=idle_timeout, batch_window=batch_window).start()
