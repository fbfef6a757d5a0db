"""SEANet: Mimi's convolutional encoder (24 kHz audio -> 25 Hz latent) and decoder (back).

Tensors are time-major, [B, T, C] (see services.mimi.conv for why). Every conv is causal and
streams, so one network serves batch calls (state None: fresh left padding) and streaming calls
(a state per conv carries the past). Layer indices follow the checkpoint (``encoder.model.N``):
ELUs take a slot in the sequence, so the convs sit at 0, 3, 6, ... (spec §1.2).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from services.core.conv import ConvState
from services.core.streaming import StreamingState
from services.mimi.conv import TimeMajorConv1d, TimeMajorConvTranspose1d, elu


@dataclasses.dataclass(frozen=True)
class SeanetConfig:
    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder runs them reversed
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2

    @property
    def hop_length(self) -> int:
        """Samples per latent step."""
        return math.prod(self.ratios)

    @classmethod
    def from_dict(cls, d: dict) -> SeanetConfig:
        """Reads Kyutai's ``seanet`` group, refusing variants this implementation does not run."""
        unsupported = {
            "causal": (d.get("causal", True), True),
            "norm": (d.get("norm", "none"), "none"),
            "pad_mode": (d.get("pad_mode", "constant"), "constant"),
            "true_skip": (d.get("true_skip", True), True),
            "activation": (d.get("activation", "ELU"), "ELU"),
            "lstm": (d.get("lstm", 0), 0),
        }
        for key, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"seanet {key}={value!r} is not supported (only {supported!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "ratios" in kwargs:
            kwargs["ratios"] = tuple(kwargs["ratios"])
        return cls(**kwargs)


@dataclasses.dataclass
class SeanetState(StreamingState):
    """One conv state per stateful layer, in network order."""

    layers: list[StreamingState]


class ResidualBlock(nn.Module):
    """y = x + Conv_1(ELU(Conv_k(ELU(x)))), the hidden width reduced by ``compress``.
    ``block.1`` and ``block.3`` are the checkpoint's names of the two convs; the nn.ELU modules
    only hold the checkpoint's indices (the faster ``elu`` computes the same function)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = nn.ModuleList([
            nn.ELU(),
            TimeMajorConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            TimeMajorConv1d(hidden, dim, 1),
        ])

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ConvState:
        # Only the first conv has a past to carry; the second has kernel 1.
        return self.block[1].init_state(batch_size, device, dtype)

    def forward(self, x: Tensor, state: ConvState | None = None,
                active: Tensor | None = None) -> Tensor:
        conv1, conv2 = self.block[1], self.block[3]
        hidden = conv1(elu(x), state, active)
        return conv2.pointwise_residual(elu(hidden, inplace=True), x)


def _residual_blocks(cfg: SeanetConfig, dim: int) -> list[nn.Module]:
    return [ResidualBlock(dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
            for j in range(cfg.n_residual_layers)]


class _Seanet(nn.Module):
    """The sequence ``model`` run layer by layer, each stateful layer with its own state."""

    model: nn.ModuleList

    def stateful_layers(self) -> list[nn.Module]:
        return [layer for layer in self.model if hasattr(layer, "init_state")]

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> SeanetState:
        return SeanetState([layer.init_state(batch_size, device, dtype)
                            for layer in self.stateful_layers()])

    def forward(self, x: Tensor, state: SeanetState | None = None,
                active: Tensor | None = None) -> Tensor:
        states = iter(state.layers) if state is not None else None
        for layer in self.model:
            if isinstance(layer, nn.ELU):
                # Every ELU follows a layer that made a fresh tensor: safe to overwrite.
                x = elu(x, inplace=True)
            else:
                x = layer(x, next(states) if states is not None else None, active)
        return x


class SeanetEncoder(_Seanet):
    """[B, N, channels] -> [B, N / hop_length, dimension]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        width = cfg.n_filters
        layers: list[nn.Module] = [TimeMajorConv1d(cfg.channels, width, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            layers += _residual_blocks(cfg, width)
            # Downsampling convs use kernel = 2 * stride (spec §1.2).
            layers += [nn.ELU(), TimeMajorConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), TimeMajorConv1d(width, cfg.dimension, cfg.last_kernel_size)]
        self.model = nn.ModuleList(layers)


class SeanetDecoder(_Seanet):
    """[B, T, dimension] -> [B, T * hop_length, channels]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [TimeMajorConv1d(cfg.dimension, width, cfg.kernel_size)]
        for ratio in cfg.ratios:
            layers += [nn.ELU(), TimeMajorConvTranspose1d(width, width // 2, 2 * ratio, ratio)]
            width //= 2
            layers += _residual_blocks(cfg, width)
        layers += [nn.ELU(), TimeMajorConv1d(width, cfg.channels, cfg.last_kernel_size)]
        self.model = nn.ModuleList(layers)
