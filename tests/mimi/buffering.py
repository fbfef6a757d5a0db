"""Audio chunks of any size in, whole code frames out: the buffering the streaming encoder
leaves to its caller (it only takes whole 1920-sample frames,
docs/architecture.md#mimi-streaming).

    enc = StreamingEncoder(model, batch_size=3)
    enc.push(0, chunk)                  # any length, any session, any time
    while enc.ready().any():
        codes, active = enc.step()      # one frame for every session that has one buffered
        ...                             # codes[b] is meaningful where active[b]

Each session's samples wait in a ring buffer (one row per session, grown only when a session
pushes more than it holds); ``step`` gathers a frame from every ready row at once, so the
per-frame work has no loop over sessions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from services.mimi.model import MimiModel


class StreamingEncoder:
    def __init__(self, model: MimiModel, batch_size: int, num_codebooks: int | None = None,
                 device: torch.device | str | None = None, capacity_frames: int = 4):
        self.model = model
        self.num_codebooks = model.resolve_num_codebooks(num_codebooks)
        self.frame_size = model.frame_size
        device = torch.device(device) if device is not None else model.device
        self.state = model.init_encoder_state(batch_size, device)
        self.buffer = torch.zeros(batch_size, capacity_frames * self.frame_size, device=device)
        self.start = torch.zeros(batch_size, dtype=torch.long, device=device)  # read position
        self.fill = torch.zeros(batch_size, dtype=torch.long, device=device)  # samples held
        self._offsets = torch.arange(self.frame_size, device=device)

    @property
    def batch_size(self) -> int:
        return self.buffer.shape[0]

    def pending(self) -> Tensor:
        """Samples buffered per session [B] (not yet encoded)."""
        return self.fill.clone()

    def ready(self) -> Tensor:
        """[B] True where a whole frame is buffered."""
        return self.fill >= self.frame_size

    def push(self, session: int, pcm: np.ndarray | Tensor) -> None:
        """Appends 24 kHz mono float samples [n] to one session's buffer."""
        pcm = torch.as_tensor(pcm, dtype=self.buffer.dtype).to(self.buffer.device).reshape(-1)
        fill, capacity = int(self.fill[session]), self.buffer.shape[1]
        if fill + pcm.numel() > capacity:
            self._grow(fill + pcm.numel())
            capacity = self.buffer.shape[1]
        end = (int(self.start[session]) + fill) % capacity
        head = min(pcm.numel(), capacity - end)  # up to the end of the row, then wrap around
        self.buffer[session, end: end + head] = pcm[:head]
        self.buffer[session, : pcm.numel() - head] = pcm[head:]
        self.fill[session] += pcm.numel()

    def pad_to_frame(self, session: int) -> int:
        """Completes a trailing partial frame with zeros (end of a stream); returns how many
        zeros were added."""
        missing = -int(self.fill[session]) % self.frame_size
        if missing:
            self.push(session, torch.zeros(missing))
        return missing

    def step(self) -> tuple[Tensor, Tensor]:
        """Encodes one frame for every ready session -> (codes [B, K, 1], active [B]). Sessions
        without a whole frame do not advance; their codes rows are meaningless."""
        active = self.ready()
        index = (self.start[:, None] + self._offsets) % self.buffer.shape[1]
        frame = self.buffer.gather(1, index)[:, None]
        codes = self.model.encode_step(frame, self.state, active, self.num_codebooks)
        step = active.long() * self.frame_size
        self.start.add_(step).remainder_(self.buffer.shape[1])
        self.fill.sub_(step)
        return codes, active

    def encode_available(self) -> list[Tensor]:
        """Steps until no session has a whole frame -> per session, its new codes [K, n_b]."""
        out: list[list[Tensor]] = [[] for _ in range(self.batch_size)]
        while self.ready().any():
            codes, active = self.step()
            for b in active.nonzero()[:, 0].tolist():
                out[b].append(codes[b])
        empty = torch.zeros(self.num_codebooks, 0, dtype=torch.long, device=self.buffer.device)
        return [torch.cat(c, dim=-1) if c else empty for c in out]

    def reset(self, mask: Tensor) -> None:
        """Drops the buffered audio and the encoder state of the sessions in ``mask`` [B]."""
        mask = mask.to(self.buffer.device)
        self.state.reset(mask)
        self.fill.masked_fill_(mask, 0)
        self.start.masked_fill_(mask, 0)

    def _grow(self, needed: int) -> None:
        """Re-lays every row out from its read position into a buffer holding ``needed``."""
        capacity = self.buffer.shape[1]
        new_capacity = max(2 * capacity, -(-needed // self.frame_size) * self.frame_size)
        index = (self.start[:, None] + torch.arange(capacity, device=self.buffer.device)) \
            % capacity
        grown = self.buffer.new_zeros(self.batch_size, new_capacity)
        grown[:, :capacity] = self.buffer.gather(1, index)
        self.buffer = grown
        self.start.zero_()
