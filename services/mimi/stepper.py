"""Mimi on the batching engine. The engine has 2 x max_streams slots: slots [0, B) are
encoding sessions (80 ms of 24 kHz audio in, one code frame out), each owning a row of the
batched encoder state; slots [B, 2B) are decoding sessions (a code frame in, 1920 samples out),
each owning a row of the decoder state. Each tick runs one batched ``encode_step`` over the
encoder rows and one ``decode_step`` per distinct codebook count over the decoder rows, the
rows without input masked inactive so their state does not move. (A dialogue holds one of
each; sharing one slot range would make every forward twice as wide, half of it idle.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from services.core.engine import Engine
from services.core.streaming import StreamingState
from services.mimi.model import MimiModel


@dataclasses.dataclass(frozen=True)
class MimiStream:
    """A session's config: its direction and codebooks per frame."""

    encode: bool
    num_codebooks: int


class MimiStepper:
    def __init__(self, model: MimiModel, max_streams: int):
        """``max_streams`` encoding plus ``max_streams`` decoding sessions."""
        self.model, self.max_streams = model, max_streams
        device = next(model.parameters()).device
        self.encoder_state = model.init_encoder_state(max_streams, device)
        self.decoder_state = model.init_decoder_state(max_streams, device)
        # Input rows are written in place each tick: no allocation growth with time.
        self._pcm = torch.zeros(max_streams, 1, model.frame_size, device=device)
        self._codes = torch.zeros(max_streams, model.cfg.max_codebooks, 1, dtype=torch.long,
                                  device=device)
        self._codebooks = [0] * max_streams  # per decoder row
        self._encode_codebooks = [0] * max_streams  # per encoder row
        self._mask = torch.zeros(max_streams, dtype=torch.bool, device=device)

    @property
    def encoder_slots(self) -> range:
        return range(self.max_streams)

    @property
    def decoder_slots(self) -> range:
        return range(self.max_streams, 2 * self.max_streams)

    def start(self, slots: Sequence[int], configs: Sequence[MimiStream]) -> None:
        for slot, config in zip(slots, configs, strict=True):
            if config.encode != (slot in self.encoder_slots):
                raise ValueError(f"slot {slot} is not a {'en' if config.encode else 'de'}coder "
                                 "slot: open sessions with among=encoder_slots/decoder_slots")
        encoders = [s for s in slots if s in self.encoder_slots]
        decoders = [s - self.max_streams for s in slots if s in self.decoder_slots]
        self.encoder_state.reset(self._rows_mask(encoders))
        self.decoder_state.reset(self._rows_mask(decoders))
        for slot, config in zip(slots, configs, strict=True):
            table = self._encode_codebooks if config.encode else self._codebooks
            table[slot % self.max_streams] = config.num_codebooks

    def step(self, slots: Sequence[int], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray | None] = [None] * len(slots)
        encoding = [i for i, slot in enumerate(slots) if slot in self.encoder_slots]
        if encoding:
            self._encode([slots[i] for i in encoding], [inputs[i] for i in encoding],
                         encoding, outputs)
        decoding = [i for i, slot in enumerate(slots) if slot in self.decoder_slots]
        rows = {i: slots[i] - self.max_streams for i in decoding}
        for k in sorted({self._codebooks[rows[i]] for i in decoding}):
            group = [i for i in decoding if self._codebooks[rows[i]] == k]
            self._decode([rows[i] for i in group], [inputs[i] for i in group], k, group,
                         outputs)
        return outputs

    def _encode(self, rows: list[int], frames: list[np.ndarray], where: list[int],
                outputs: list) -> None:
        self._pcm[rows, 0] = torch.from_numpy(np.stack(frames)).to(self._pcm)
        k = max(self._encode_codebooks[r] for r in rows)
        # Residual quantization is sequential, so the first k' codes of a k-code frame are the
        # k'-code frame: one call serves sessions asking for different counts.
        n = max(rows) + 1  # idle rows above the highest busy one stay out of the forward
        codes = self.model.encode_step(self._pcm[:n], self._first(self.encoder_state, n),
                                       self._rows_mask(rows)[:n],
                                       num_codebooks=k)[rows, :, 0].cpu().numpy()
        for n, (row, i) in enumerate(zip(rows, where, strict=True)):
            outputs[i] = codes[n, : self._encode_codebooks[row]]

    def _decode(self, rows: list[int], frames: list[np.ndarray], k: int, where: list[int],
                outputs: list) -> None:
        codes = self._codes[:, :k]
        codes[rows, :, 0] = torch.from_numpy(np.stack(frames)).to(codes)
        n = max(rows) + 1
        pcm = self.model.decode_step(codes[:n], self._first(self.decoder_state, n),
                                     self._rows_mask(rows)[:n])
        pcm = pcm[rows, 0].float().cpu().numpy()
        for n, i in enumerate(where):
            outputs[i] = pcm[n]

    def _first(self, state: StreamingState, n: int) -> StreamingState:
        return state if n == self.max_streams else state.first_sessions(n)

    def _rows_mask(self, rows: Sequence[int]) -> torch.Tensor:
        self._mask.zero_()
        self._mask[list(rows)] = True
        return self._mask


def mimi_engine(model: MimiModel, max_streams: int, idle_timeout: float = 30.0,
                max_queue: int = 8, batch_window: float = 0.0) -> Engine:
    """A started engine serving ``max_streams`` encoding and ``max_streams`` decoding
    sessions of ``model`` (open them with ``among=stepper.encoder_slots`` / ``decoder_slots``);
    encoders and decoders batch separately, so neither waits for the other."""
    stepper = MimiStepper(model, max_streams)
    return Engine("mimi", stepper, 2 * max_streams, max_queue=max_queue,
                  idle_timeout=idle_timeout, batch_window=batch_window,
                  groups=[stepper.encoder_slots, stepper.decoder_slots]).start()
