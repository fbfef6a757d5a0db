"""The Moshi LM: a temporal transformer over 12.5 Hz frames of token streams (text + audio
codebooks) and a depth transformer ("depformer") that produces one frame's audio codebooks one
after the other. Parameter names match Kyutai's checkpoints key for key (spec §2.7).

The model is stateless: the streaming loop (``generate.py``) owns the caches and the delays,
and calls ``embed`` -> ``temporal`` -> heads -> ``depth_step``. ``forward`` runs the same pieces
over a whole teacher-forced sequence.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.constants import ZERO_TOKEN
from services.core.transformer import RMSNorm, Transformer, TransformerState
from services.moshi_lm.config import LMConfig


class TokenEmbedding(nn.Embedding):
    """Embedding where the id -1 (``ZERO_TOKEN``, "no input") gives an exact zero vector."""

    def forward(self, ids: Tensor) -> Tensor:
        out = F.embedding(ids.clamp(min=0), self.weight)
        return out.masked_fill((ids == ZERO_TOKEN).unsqueeze(-1), 0.0)


class LowRankEmbedding(nn.Module):
    """An embedding table of width ``rank`` followed by a ``low_rank`` projection to ``dim``
    (the depformer's tables with ``depformer_low_rank_embeddings``); id -1 gives zeros."""

    def __init__(self, num_embeddings: int, rank: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, rank))
        self.low_rank = nn.Linear(rank, dim, bias=False)
        nn.init.normal_(self.weight)

    def forward(self, ids: Tensor) -> Tensor:
        out = self.low_rank(F.embedding(ids.clamp(min=0), self.weight))
        return out.masked_fill((ids == ZERO_TOKEN).unsqueeze(-1), 0.0)


def _embedding(num_embeddings: int, dim: int, rank: int | None = None) -> nn.Module:
    if rank:
        return LowRankEmbedding(num_embeddings, rank, dim)
    return TokenEmbedding(num_embeddings, dim)


@dataclasses.dataclass
class TemporalOutput:
    hidden: Tensor  # [B, T, dim] after out_norm: input of the text head and the depformer
    text_logits: Tensor  # [B, T, text_vocab] float32
    extra_probs: Tensor | None  # [B, T, heads, extra_heads_dim] float32, or None


class LMModel(nn.Module):
    # Config keys (kept in ``cfg.extra``) needing modules this class does not build; a
    # subclass that builds them (the TTS model) clears this.
    unbuilt_keys: tuple[str, ...] = (
        "demux_second_stream", "cross_attention", "conditioners", "fuser")

    def __init__(self, cfg: LMConfig):
        super().__init__()
        cfg.validate()
        unsupported = [k for k in self.unbuilt_keys if cfg.extra.get(k)]
        if unsupported:
            raise ValueError(f"{type(self).__name__} does not build {unsupported} (TTS "
                             "checkpoints need the TTS model)")
        self.cfg = cfg
        self.text_emb = self._make_text_embedding(cfg.dim)
        self.emb = nn.ModuleList(TokenEmbedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q))
        self.transformer = self._make_transformer()
        self.out_norm = RMSNorm(cfg.dim)
        self.text_linear = nn.Linear(cfg.dim, cfg.text_vocab, bias=False)
        self.extra_heads = nn.ModuleList(
            nn.Linear(cfg.dim, cfg.extra_heads_dim, bias=False)
            for _ in range(cfg.extra_heads_num_heads))
        if cfg.dep_q:
            dim, rank = cfg.depformer_dim, cfg.depformer_low_rank_embeddings
            num_in = max(cfg.depformer_input_index) + 1
            self.depformer_in = nn.ModuleList(
                nn.Linear(cfg.dim, dim, bias=False) for _ in range(num_in))
            self.depformer_text_emb = self._make_text_embedding(dim, rank)
            # The last codebook is never an input: dep_q - 1 tables.
            self.depformer_emb = nn.ModuleList(
                _embedding(cfg.card + 1, dim, rank) for _ in range(cfg.dep_q - 1))
            self.depformer = Transformer(cfg.depformer)
            self.linears = nn.ModuleList(
                nn.Linear(dim, cfg.card, bias=False) for _ in range(cfg.dep_q))
            # Which projection each codebook uses, as a tensor once on the right device.
            self._input_index: Tensor | None = None

    # ---- construction hooks (a subclass swaps in its own variants) --------------------------

    def _make_text_embedding(self, dim: int, rank: int | None = None) -> nn.Module:
        """The text table of the temporal transformer (width ``dim``) or, with ``rank`` when
        low-rank, of the depformer."""
        return _embedding(self.cfg.text_card + 1, dim, rank)

    def _make_transformer(self) -> Transformer:
        return Transformer(self.cfg.transformer)

    # ---- fused weights ----------------------------------------------------------------------
    # The n_q audio tables (and the dep_q depformer input projections) are looked up (applied)
    # together at every step. After loading, each is re-pointed at a row block of one
    # contiguous tensor, so one kernel serves all streams while the parameters keep their
    # checkpoint names and no weight is stored twice.

    def fuse_weights(self) -> None:
        """(Re)builds the fused tables; idempotent. Called by the loader, and by ``embed`` if a
        later ``.to()`` / ``load_state_dict`` broke the sharing."""
        self._audio_table = _fuse(self.emb)
        if self.cfg.dep_q:
            self._depformer_in_weight = _fuse(self.depformer_in)

    def _fused(self) -> bool:
        table = getattr(self, "_audio_table", None)
        return (table is not None and table.device == self.emb[0].weight.device
                and table.dtype == self.emb[0].weight.dtype
                and self.emb[0].weight.data_ptr() == table.data_ptr()
                and self.emb[-1].weight.data_ptr() == table[-self.cfg.card - 1:].data_ptr())

    def linear_parts(self) -> list[nn.Module]:
        """The submodules whose linear weights are only used through ``F.linear`` (candidates
        for faster weight formats); the fused depformer input projections are not."""
        parts = [self.transformer, self.text_linear, self.extra_heads]
        if self.cfg.dep_q:
            parts += [self.depformer, self.linears]
        return parts

    # ---- temporal transformer -------------------------------------------------------------

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens [B, T, 1 + n_q] (text first) -> summed input embeddings [B, T, dim].

        Subclasses add their own terms (a demuxed text embedding, summed conditions) by
        overriding ``embed_text`` or adding to this sum.
        """
        return self.embed_text(tokens[..., 0]) + self.embed_audio(tokens[..., 1:])

    def embed_text(self, text: Tensor) -> Tensor:
        return self.text_emb(text)

    def embed_audio(self, audio: Tensor) -> Tensor:
        """audio [..., n_q] -> sum of the n_q codebook embeddings (one lookup in the fused
        table). The sum runs codebook by codebook, in order, in the compute dtype: in bf16 the
        rounding of every partial sum is part of the reference's result."""
        if not self._fused():
            self.fuse_weights()
        rows = self.cfg.card + 1
        offsets = torch.arange(0, self.cfg.n_q * rows, rows, device=audio.device)
        vectors = F.embedding(audio.clamp(min=0) + offsets, self._audio_table)
        vectors = vectors.masked_fill((audio == ZERO_TOKEN).unsqueeze(-1), 0.0)
        out = vectors[..., 0, :]
        for k in range(1, self.cfg.n_q):
            out = out + vectors[..., k, :]
        return out

    def init_temporal_state(self, batch_size: int, device: torch.device | str | None = None,
                            dtype: torch.dtype | None = None) -> TransformerState:
        """The temporal transformer's state for B sessions (a subclass may hold more in it,
        and take more keyword arguments: ``LMGenerator.init_state`` passes them through)."""
        return self.transformer.init_state(batch_size, device, dtype)

    def temporal(self, x: Tensor, state: TransformerState | None = None,
                 active: Tensor | None = None) -> TemporalOutput:
        """Summed embeddings [B, T, dim] -> hidden state, text logits and extra-head probs."""
        hidden = self.out_norm(self.transformer(x, state, active))
        extra = None
        if len(self.extra_heads):
            # The pause heads read the normalised vector the text head reads (docs §3.4).
            extra = torch.stack([F.softmax(h(hidden).float(), dim=-1) for h in self.extra_heads],
                                dim=-2)
        return TemporalOutput(hidden, self.text_linear(hidden).float(), extra)

    # ---- depth transformer ----------------------------------------------------------------

    def depformer_inputs(self, hidden: Tensor) -> Tensor:
        """hidden [..., dim] -> the per-codebook projections [..., dep_q, depformer_dim]:
        codebook k gets projection ``cfg.depformer_input_index[k]``, all of them computed by
        one matmul of the fused weight."""
        if not self._fused():
            self.fuse_weights()
        proj = F.linear(hidden, self._depformer_in_weight)
        proj = proj.unflatten(-1, (-1, self.cfg.depformer_dim))
        if proj.shape[-2] == 1:
            return proj.expand(*proj.shape[:-2], self.cfg.dep_q, -1)
        if self.cfg.depformer_input_index == tuple(range(self.cfg.dep_q)):
            return proj  # one projection per codebook, in order
        if self._input_index is None or self._input_index.device != proj.device:
            self._input_index = torch.tensor(self.cfg.depformer_input_index,
                                             device=proj.device)
        return proj.index_select(-2, self._input_index)

    def init_depformer_state(self, batch_size: int, device: torch.device | str | None = None,
                             dtype: torch.dtype | None = None) -> TransformerState:
        """Scratch state for one frame of depformer steps (``depth_step`` resets it at k=0)."""
        return self.depformer.init_state(batch_size, device, dtype, capacity=self.cfg.dep_q)

    def depth_step(self, k: int, projected: Tensor, previous: Tensor,
                   state: TransformerState) -> Tensor:
        """Depformer step k of a frame: projected [B, depformer_dim] (``depformer_inputs``
        row k), previous [B] the token before it (the text token at k = 0, else audio
        codebook k-1) -> logits [B, card] of audio codebook k (float32)."""
        if k == 0:
            x = projected + self.depformer_text_emb(previous)
        else:
            x = projected + self.depformer_emb[k - 1](previous)
        # A fresh depformer context for every frame (rewound at k = 0, no reallocation).
        out = self.depformer.fresh_context_step(x[:, None], state, k,
                                                weight_index=self.cfg.depformer_weight_index[k])
        logits = self.linears[k](out[:, 0])
        return logits if logits.dtype == torch.float32 else logits.float()

    # ---- whole sequences --------------------------------------------------------------------

    def forward(self, tokens: Tensor, generated: Tensor | None = None
                ) -> tuple[TemporalOutput, Tensor | None]:
        """Teacher-forced pass. tokens [B, T, 1 + n_q]: the (delayed) input of each step;
        generated [B, T, 1 + dep_q]: the text and audio tokens chosen at each step, fed to the
        depformer. Returns the temporal outputs and audio logits [B, T, dep_q, card]."""
        temporal = self.temporal(self.embed(tokens))
        if generated is None or not self.cfg.dep_q:
            return temporal, None
        batch, steps, _ = temporal.hidden.shape
        projected = self.depformer_inputs(temporal.hidden).flatten(0, 1)
        flat = generated.flatten(0, 1)
        state = self.init_depformer_state(batch * steps, device=tokens.device,
                                          dtype=projected.dtype)
        logits = [self.depth_step(k, projected[:, k], flat[:, k], state)
                  for k in range(self.cfg.dep_q)]
        return temporal, torch.stack(logits, dim=1).view(batch, steps, self.cfg.dep_q, -1)


def _fuse(modules: nn.ModuleList) -> Tensor:
    """Concatenates the modules' weights along dim 0 and re-points each weight at its block."""
    table = torch.cat([m.weight.detach() for m in modules])
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight = nn.Parameter(table[start:start + rows], requires_grad=m.weight.requires_grad)
        start += rows
    return table
