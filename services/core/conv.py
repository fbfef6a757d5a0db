"""Causal 1-d convolutions that stream.

Padding is left-only and carried across calls, so feeding a signal in chunks gives exactly the
output of feeding it at once:

    CausalConv1d, kernel k (effective k_eff = (k - 1) * dilation + 1), stride s:

        call 1:  [ pad: k_eff - s fresh samples | x1 ]  -> conv (no padding) -> T1 / s outputs
        call 2:  [ last k_eff - s inputs seen    | x2 ]  -> conv               -> T2 / s outputs

    CausalConvTranspose1d, kernel K, stride s: each call yields T * s samples; the last K - s
    samples of the full transposed output are still incomplete (later inputs overlap them), so
    they are held back (bias removed, it is added again by the next call) and added to the head
    of the next call's output.

The checkpoint nests every conv two deep (``conv.conv.weight``, ``convtr.convtr.weight``), a trace
of the weight-norm wrapper used in training; ``_Wrapped`` keeps those names.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from services.core.streaming import StreamingState, masked_update


def conv_left_padding(kernel_size: int, stride: int, dilation: int = 1) -> int:
    """Samples of past context a causal conv needs in front of each call's input."""
    return (kernel_size - 1) * dilation + 1 - stride


def transposed_conv_tail(kernel_size: int, stride: int) -> int:
    """Samples of a transposed conv's output that later inputs still add to."""
    return kernel_size - stride


class _Wrapped(nn.Module):
    """Holds a conv under the attribute name the checkpoint uses."""

    def __init__(self, name: str, module: nn.Module):
        super().__init__()
        self.add_module(name, module)


@dataclasses.dataclass
class ConvState(StreamingState):
    previous: Tensor  # [B, C_in, left padding]: the last inputs seen
    first: Tensor  # [B] bool: no input seen yet (replicate padding fills `previous` then)

    @property
    def fresh_values(self) -> dict[str, object]:
        return {"first": True}


@dataclasses.dataclass
class ConvTransposeState(StreamingState):
    partial: Tensor  # [B, C_out, K - s]: overlap tail still to be completed, without bias


class CausalConv1d(nn.Module):
    """Conv1d padded on the left only; ``pad_mode`` "replicate" repeats the first input sample
    instead of zeros before a session's first call."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
        conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
            bias=bias,
        )
        self.conv = _Wrapped("conv", conv)
        self.stride = stride
        self.padding = conv_left_padding(kernel_size, stride, dilation)
        self.replicate = pad_mode == "replicate"

    @property
    def inner(self) -> nn.Conv1d:
        return self.conv.conv

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ConvState:
        weight = self.inner.weight
        return ConvState(
            previous=torch.zeros(batch_size, self.inner.in_channels, self.padding,
                                 device=device or weight.device, dtype=dtype or weight.dtype),
            first=torch.ones(batch_size, dtype=torch.bool, device=device or weight.device),
        )

    def forward(self, x: Tensor, state: ConvState | None = None,
                active: Tensor | None = None) -> Tensor:
        """x [B, C_in, T] with T a multiple of the stride -> [B, C_out, T / stride]."""
        return self.inner(self.with_left_context(x, state, active, time_dim=2))

    def with_left_context(self, x: Tensor, state: ConvState | None, active: Tensor | None,
                          time_dim: int) -> Tensor:
        """x with the session's past inputs (or the fresh padding) prepended along
        ``time_dim``; stores the new past in ``state`` for the active sessions."""
        steps = x.shape[time_dim]
        if steps % self.stride:
            raise ValueError(f"input length {steps} is not a multiple of the stride "
                             f"{self.stride}; buffer whole frames before calling")
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        previous = state.previous
        if self.replicate:
            # A copy of the flags: autograd keeps the condition, and they change below.
            first = state.first.clone().view(-1, 1, 1)
            previous = torch.where(first, x.narrow(time_dim, 0, 1).expand_as(previous),
                                   previous)
        if self.padding:
            x = torch.cat([previous, x], dim=time_dim)
            tail = x.narrow(time_dim, x.shape[time_dim] - self.padding, self.padding)
            masked_update(state.previous, tail.detach(), active)
        if active is None:
            state.first.fill_(False)
        else:
            state.first.logical_and_(~active)
        return x


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose output is exactly T * stride samples per call (overlap-add)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride,
                                    groups=groups, bias=bias)
        self.convtr = _Wrapped("convtr", convtr)
        self.tail = transposed_conv_tail(kernel_size, stride)

    @property
    def inner(self) -> nn.ConvTranspose1d:
        return self.convtr.convtr

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ConvTransposeState:
        weight = self.inner.weight
        return ConvTransposeState(partial=torch.zeros(
            batch_size, self.inner.out_channels, self.tail,
            device=device or weight.device, dtype=dtype or weight.dtype))

    def forward(self, x: Tensor, state: ConvTransposeState | None = None,
                active: Tensor | None = None) -> Tensor:
        """x [B, C_in, T] -> [B, C_out, T * stride]."""
        y = self.inner(x)
        if not self.tail:
            return y
        if state is None:
            return y[..., : -self.tail]
        head = y[..., : self.tail] + state.partial
        y = torch.cat([head, y[..., self.tail:]], dim=-1)
        tail = y[..., -self.tail:]
        bias = self.inner.bias
        if bias is not None:
            tail = tail - bias[:, None]
        masked_update(state.partial, tail.detach(), active)
        return y[..., : -self.tail]
