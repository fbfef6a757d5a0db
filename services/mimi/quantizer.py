"""Mimi's split residual vector quantizer (spec §1.6).

Two residual quantizers read the SAME 12.5 Hz latent through their own input projections:
``rvq_first`` (1 "semantic" codebook) and ``rvq_rest`` (the acoustic codebooks). Decoding sums
their output projections. Each codebook is stored as EMA statistics (``embedding_sum``,
``cluster_usage``); the centroids are their ratio.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.kernels.float_linear import addmm, linear


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
    dimension: int = 256  # codebook vector width
    n_q: int = 32  # codebooks in all: 1 semantic + n_q - 1 acoustic
    bins: int = 2048  # entries per codebook
    input_dimension: int = 512
    output_dimension: int = 512
    n_q_semantic: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> QuantizerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Codebook(nn.Module):
    """Buffers named as in the checkpoint, plus the centroids derived from them (kept, not
    saved: recomputing 32 codebooks per frame would cost more than quantizing). They are
    refreshed after every ``load_state_dict``; call ``refresh`` after editing the buffers."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.register_buffer("_initialized", torch.ones(1))
        self.register_buffer("cluster_usage", torch.ones(bins))
        self.register_buffer("embedding_sum", torch.randn(bins, dim))
        self.register_buffer("centroids", torch.empty(bins, dim), persistent=False)
        self.register_buffer("squared_norms", torch.empty(bins), persistent=False)
        self.refresh()
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())

    def refresh(self) -> None:
        with torch.no_grad():
            usage = self.cluster_usage.clamp(min=1e-5)
            self.centroids = self.embedding_sum / usage[:, None]
            self.squared_norms = self.centroids.pow(2).sum(-1)

    def encode(self, x: Tensor) -> Tensor:
        """x [..., dim] -> index of the nearest centroid (Euclidean) [...]."""
        # argmin |x - c|^2 = argmin |c|^2 - 2 x.c  (|x|^2 is the same for every c)
        return addmm(self.squared_norms, x.reshape(-1, x.shape[-1]), self.centroids,
                     alpha=-2).argmin(dim=-1).view(x.shape[:-1])

    def decode(self, codes: Tensor) -> Tensor:
        return F.embedding(codes, self.centroids)


class VectorQuantization(nn.Module):
    """One level; the extra nesting only mirrors the checkpoint (``layers.N._codebook``)."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        self._codebook = Codebook(dim, bins)


class ResidualVectorQuantization(nn.Module):
    def __init__(self, num_layers: int, dim: int, bins: int):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, bins) for _ in range(num_layers))

    def encode(self, x: Tensor, n: int) -> Tensor:
        """x [B, T, dim] -> codes [B, n, T]: each level quantizes what the previous left."""
        codes = []
        for i, layer in enumerate(self.layers[:n]):
            index = layer._codebook.encode(x)
            if i + 1 < n:  # the last level's residual is not used
                x = x - layer._codebook.decode(index)
            codes.append(index)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, n, T] -> sum of the n levels' centroids [B, T, dim]."""
        total = self.layers[0]._codebook.decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            total = total + self.layers[i]._codebook.decode(codes[:, i])
        return total


class ResidualVectorQuantizer(nn.Module):
    """Projection in, residual quantization, projection out (1x1 convs without bias)."""

    def __init__(self, cfg: QuantizerConfig, num_layers: int):
        super().__init__()
        self.input_proj = nn.Conv1d(cfg.input_dimension, cfg.dimension, 1, bias=False)
        self.output_proj = nn.Conv1d(cfg.dimension, cfg.output_dimension, 1, bias=False)
        self.vq = ResidualVectorQuantization(num_layers, cfg.dimension, cfg.bins)

    def encode(self, z: Tensor, n: int) -> Tensor:
        """z [B, T, input_dimension] -> codes [B, n, T]."""
        return self.vq.encode(linear(z, self.input_proj.weight[..., 0]), n)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, n, T] -> [B, T, output_dimension]."""
        return linear(self.vq.decode(codes), self.output_proj.weight[..., 0])


class SplitResidualVectorQuantizer(nn.Module):
    """Latents are [B, T, D] here (time before channels), the layout the matmuls want."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.rvq_first = ResidualVectorQuantizer(cfg, cfg.n_q_semantic)
        self.rvq_rest = ResidualVectorQuantizer(cfg, cfg.n_q - cfg.n_q_semantic)

    def _check(self, n: int) -> None:
        if not 1 <= n <= self.cfg.n_q:
            raise ValueError(f"number of codebooks must be in 1..{self.cfg.n_q}, got {n}")

    def encode(self, z: Tensor, n: int) -> Tensor:
        """z [B, T, D] -> codes [B, n, T] (int64)."""
        self._check(n)
        semantic = self.cfg.n_q_semantic
        codes = self.rvq_first.encode(z, min(n, semantic))
        if n > semantic:
            # Both halves quantize the same latent, not the semantic half's residual.
            codes = torch.cat([codes, self.rvq_rest.encode(z, n - semantic)], dim=1)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, n, T] -> latent [B, T, D]."""
        self._check(codes.shape[1])
        semantic = self.cfg.n_q_semantic
        z = self.rvq_first.decode(codes[:, :semantic])
        if codes.shape[1] > semantic:
            z = z + self.rvq_rest.decode(codes[:, semantic:])
        return z
