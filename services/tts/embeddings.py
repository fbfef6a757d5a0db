"""Token embeddings specific to Kyutai's TTS checkpoints (docs/architecture.md §4).

- ``DemuxTextEmbedding``: the text stream carries two muxed tokens per step (main and
  look-ahead), id = (second + 1) * card + main; it embeds them as the sum of two projections of
  one shared table. Keys ``text_emb.{weight,out1,out2}`` and, in the depth transformer's
  low-rank variant, ``depformer_text_emb.{weight,low_rank,out1,out2}``.

Id -1 ("no input") embeds to an exact zero vector. (The low-rank depformer audio tables are an
LM feature: ``services.moshi_lm.model.LowRankEmbedding``.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.constants import ZERO_TOKEN


def _zero_where_no_input(ids: Tensor, out: Tensor) -> Tensor:
    return out.masked_fill((ids == ZERO_TOKEN)[..., None], 0.0)


class DemuxTextEmbedding(nn.Module):
    """Embeds muxed text ids: out1(E[id mod card]) + [id >= card] * out2(E[id div card - 1]).

    ``card`` is text_card + 1. The low-rank variant's checkpoint also holds a ``low_rank``
    projection that demuxing does not use (out1 / out2 already map to ``out_dim``); it is kept
    so the checkpoint loads strictly.
    """

    def __init__(self, card: int, dim: int, out_dim: int | None = None,
                 low_rank: bool = False):
        super().__init__()
        out_dim = out_dim or dim
        self.card = card
        self.weight = nn.Parameter(torch.empty(card, dim))
        if low_rank:
            self.low_rank = nn.Linear(dim, out_dim, bias=False)
        self.out1 = nn.Linear(dim, out_dim, bias=False)
        self.out2 = nn.Linear(dim, out_dim, bias=False)
        nn.init.normal_(self.weight)

    def forward(self, ids: Tensor) -> Tensor:
        """ids [...] (long) -> [..., out_dim]."""
        ids_ = ids.clamp(min=0)
        second = ids_ // self.card - 1
        out = self.out1(F.embedding(ids_ % self.card, self.weight))
        out2 = self.out2(F.embedding(second.clamp(min=0), self.weight))
        out = out + out2 * (second >= 0)[..., None].to(out2.dtype)
        return _zero_where_no_input(ids, out)

