"""Mimi on the batching engine: every slot has an encoder and a decoder state row; a session
either encodes (80 ms of 24 kHz audio in, one code frame out) or decodes (a code frame in, 1920
samples out). Each tick runs one batched ``encode_step`` over the encoding sessions and one
``decode_step`` per distinct codebook count over the decoding sessions, with the other rows
masked inactive so their state does not move."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from services.core.engine import Engine
from services.mimi.model import MimiModel


@dataclasses.dataclass(frozen=True)
class MimiStream:
    """A session's config: its direction and codebooks per frame."""

    encode: bool
    num_codebooks: int


class MimiStepper:
    def __init__(self, model: MimiModel, max_sessions: int):
        self.model = model
        device = next(model.parameters()).device
        self.device = device
        self.encoder_state = model.init_encoder_state(max_sessions, device)
        self.decoder_state = model.init_decoder_state(max_sessions, device)
        # Input rows are written in place each tick: no allocation growth with time.
        self._pcm = torch.zeros(max_sessions, 1, model.frame_size, device=device)
        self._codes = torch.zeros(max_sessions, model.cfg.max_codebooks, 1, dtype=torch.long,
                                  device=device)
        self._streams: list[MimiStream | None] = [None] * max_sessions
        self._mask = torch.zeros(max_sessions, dtype=torch.bool, device=device)

    def start(self, slots: Sequence[int], configs: Sequence[MimiStream]) -> None:
        mask = self._slot_mask(slots)
        self.encoder_state.reset(mask)
        self.decoder_state.reset(mask)
        for slot, config in zip(slots, configs, strict=True):
            self._streams[slot] = config

    def step(self, slots: Sequence[int], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray | None] = [None] * len(slots)
        encoding = [i for i, slot in enumerate(slots) if self._streams[slot].encode]
        if encoding:
            self._encode(slots, inputs, encoding, outputs)
        decoding = [i for i, slot in enumerate(slots) if not self._streams[slot].encode]
        for k in sorted({self._streams[slots[i]].num_codebooks for i in decoding}):
            group = [i for i in decoding if self._streams[slots[i]].num_codebooks == k]
            self._decode(slots, inputs, group, k, outputs)
        return outputs

    def _encode(self, slots, inputs, rows, outputs) -> None:
        index = [slots[i] for i in rows]
        self._pcm[index, 0] = torch.from_numpy(np.stack([inputs[i] for i in rows])).to(
            self._pcm)
        k = max(self._streams[s].num_codebooks for s in index)
        # Residual quantization is sequential, so the first k' codes of a k-code frame are the
        # k'-code frame: one call serves sessions asking for different counts.
        codes = self.model.encode_step(self._pcm, self.encoder_state, self._slot_mask(index),
                                       num_codebooks=k)[index, :, 0].cpu().numpy()
        for row, i in enumerate(rows):
            outputs[i] = codes[row, : self._streams[slots[i]].num_codebooks]

    def _decode(self, slots, inputs, rows, k, outputs) -> None:
        index = [slots[i] for i in rows]
        codes = self._codes[:, :k]
        codes[index, :, 0] = torch.from_numpy(np.stack([inputs[i] for i in rows])).to(codes)
        pcm = self.model.decode_step(codes, self.decoder_state, self._slot_mask(index))
        pcm = pcm[index, 0].float().cpu().numpy()
        for row, i in enumerate(rows):
            outputs[i] = pcm[row]

    def _slot_mask(self, slots: Sequence[int]) -> torch.Tensor:
        self._mask.zero_()
        self._mask[list(slots)] = True
        return self._mask


def mimi_engine(model: MimiModel, max_sessions: int, idle_timeout: float = 30.0,
                max_queue: int = 8) -> Engine:
    """A started engine serving encode and decode sessions of ``model``."""
    return Engine("mimi", MimiStepper(model, max_sessions), max_sessions,
                  max_queue=max_queue, idle_timeout=idle_timeout).start()
