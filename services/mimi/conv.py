"""Time-major causal convolutions: the core's CausalConv1d / CausalConvTranspose1d (same
parameters, same checkpoint keys, same streaming semantics) run on [B, T, C] tensors as plain
matrix products.

Why: on CPU, oneDNN's 1-d convolutions on [B, C, T] are 2-5x slower than one GEMM per kernel
block on a time-major view, and time-major is also what the transformers and the quantizer
want, so the codec never transposes. A conv with stride s and kernel k = n * s reads its padded
input [L, C] as blocks [L / s, s * C] (a free view), and

    y[t] = sum_m  X[t + m] @ W_m          (n GEMMs, W_m = kernel taps m*s .. m*s + s - 1)

A conv with a large weight (the coarse layers: >= ``WINDOWED_MIN_WEIGHTS`` values) runs at a
few rows per streaming frame, where a step is bound by reading the weight once and torch's GEMM
is far from that bound. Those keep the weight as [C_out, kernel, C_in] and take each output
step's input window x[t s .. t s + kernel) as one row (a small copy: a few rows), so the whole
conv is one ``linear`` on [C_out, kernel * C_in]: this project's few-row kernel in a streaming
step, torch's GEMM on longer calls.

A transposed conv with kernel 2 s is one GEMM giving two blocks per input step; block 0 lands on
the step itself and block 1 on the next one (overlap-add, the pending block kept in the state).
Its weight is kept as [2 s * C_out, C_in], the layout of a ``linear``, for the same reason.

The batch is folded into the GEMM rows: the padded inputs of all sessions are one contiguous
[B * R, s * C] matrix; rows that straddle two sessions are computed and thrown away. Convs with
few output channels (the full-rate layers of small models, batched) run the same sums
transposed, y.T = W_m.T @ X.T, which BLAS does several times faster than a GEMM with a handful
of output columns (same products, another summation order: equal to float rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from services.core.conv import CausalConv1d, CausalConvTranspose1d, ConvState, ConvTransposeState
from services.core.kernels.float_linear import linear
from services.core.streaming import masked_update

# Convs with fewer output channels than this run their GEMMs transposed (TimeMajorConv1d._gemm_sum).
NARROW_OUT = 16
# Convs (kernel > 1, dilation 1) with at least this many weights run as one linear over input
# windows. In Mimi these are the layers after the last two downsamplings (and the decoder's
# first): 2-16 rows per frame, 6-34 MB of weights each, over half the codec's weight bytes.
WINDOWED_MIN_WEIGHTS = 1 << 20


def elu(x: Tensor, inplace: bool = False) -> Tensor:
    """ELU (alpha 1) as max(x, min(exp(x) - 1, 0)): equal to ELU because exp(x) - 1 >= x, and
    3x faster than F.elu on CPU, whose expm1 is not vectorised. Exact to 1 float ulp of 1."""
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.maximum(x, torch.exp(x).sub(1.0).clamp(max=0.0))  # no in-place for autograd
    y = torch.exp(x)
    y.sub_(1.0).clamp_(max=0.0)
    return torch.maximum(x, y, out=x if inplace else y)


def _gemm_readable(rows: Tensor) -> Tensor:
    """``rows`` itself if BLAS can read it in place, else a contiguous copy. The unfolded taps
    overlap (row stride < width): given them, a GEMM makes its own copy, element by element
    and transposed, several times slower than this row-by-row one."""
    return rows if rows.stride(0) >= rows.shape[1] and rows.stride(1) == 1 else rows.contiguous()


class _TimeMajorWeight:
    """Keeps a conv weight in the checkpoint's shape but with the memory layout the GEMMs
    read: ``weight.permute(perm)`` is contiguous, so the matrices are free views (no packed
    copy to keep in sync, no second copy of the weights). The layout is set at construction
    and again after every ``load_state_dict`` (which may swap in contiguous tensors); if it is
    lost anyway, ``matrix`` still works, from a per-call copy."""

    def __init__(self, module: nn.Module, weight: nn.Parameter, perm: tuple[int, ...]):
        self.perm = perm
        self.relayout(weight)
        module.register_load_state_dict_post_hook(lambda m, _: self.relayout(m.inner.weight))

    def relayout(self, weight: Tensor) -> None:
        with torch.no_grad():
            weight.data = weight.data.permute(self.perm).contiguous().permute(self.perm)

    def matrix(self, weight: Tensor) -> Tensor:
        packed = weight.permute(self.perm)
        return packed if packed.is_contiguous() else packed.contiguous()


class TimeMajorConv1d(CausalConv1d):
    """CausalConv1d on x [B, T, C_in] -> [B, T / stride, C_out]; state ``previous`` holds the
    last inputs time-major, [B, left padding, C_in]. Supports stride 1 (any kernel, dilation)
    and kernels that are whole multiples of the stride (dilation 1): every Mimi conv."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conv = self.inner
        kernel, dilation = conv.kernel_size[0], conv.dilation[0]
        if conv.groups != 1:
            raise ValueError("time-major convs support groups=1 only")
        if self.stride > 1 and (dilation != 1 or kernel % self.stride):
            raise ValueError(f"strided time-major conv needs dilation 1 and a kernel multiple "
                             f"of the stride, got kernel {kernel} stride {self.stride}")
        self.taps = kernel // self.stride if self.stride > 1 else kernel
        self.tap_offset = 1 if self.stride > 1 else dilation  # in blocks
        self.windowed = kernel > 1 and dilation == 1 and \
            conv.weight.numel() >= WINDOWED_MIN_WEIGHTS
        self._weight = _TimeMajorWeight(self, conv.weight,
                                        (0, 2, 1) if self.windowed else (2, 1, 0))

    def window_matrix(self) -> Tensor:
        """A windowed conv's weight as a linear's: [C_out, kernel * C_in], column k * C_in + c
        holding tap k of channel c."""
        weight = self.inner.weight
        return self._weight.matrix(weight).view(weight.shape[0], -1)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ConvState:
        weight = self.inner.weight
        return ConvState(
            previous=torch.zeros(batch_size, self.padding, self.inner.in_channels,
                                 device=device or weight.device, dtype=dtype or weight.dtype),
            first=torch.ones(batch_size, dtype=torch.bool, device=device or weight.device),
        )

    def forward(self, x: Tensor, state: ConvState | None = None,
                active: Tensor | None = None) -> Tensor:
        return self._conv(self.with_left_context(x, state, active, time_dim=1))

    def _conv(self, x: Tensor) -> Tensor:
        """Valid (unpadded) conv of x [B, L, C_in] -> [B, (L - pad) / s, C_out]."""
        if self.windowed:
            return self._windowed_conv(x)
        batch = x.shape[0]
        weight = self._weight.matrix(self.inner.weight).view(self.taps, -1,
                                                             self.inner.out_channels)
        rows = x.reshape(-1, weight.shape[1])  # [B * R, s * C_in]: blocks of s steps
        per_session = rows.shape[0] // batch
        reach = (self.taps - 1) * self.tap_offset  # extra rows each output row reads
        valid = rows.shape[0] - reach
        if weight.shape[1] < 16 and self.taps > 1:
            # Few input channels (the first conv reads 1): one GEMM on the unfolded taps
            # beats many GEMMs with a tiny inner dimension.
            taps = rows.unfold(0, reach + 1, 1)[..., :: self.tap_offset]  # [valid, sC, taps]
            blocks = [(taps.transpose(1, 2).reshape(valid, -1),
                       weight.reshape(-1, weight.shape[2]))]
        else:
            blocks = [(rows[m * self.tap_offset: m * self.tap_offset + valid], weight[m])
                      for m in range(self.taps)]
        out = self._gemm_sum(blocks)
        # Session b's rows start at b * per_session; the last `reach` of each are junk.
        out = out.as_strided((batch, per_session - reach, out.shape[1]),
                             (per_session * out.stride(0), out.stride(0), out.stride(1)))
        return out.contiguous()

    def _windowed_conv(self, x: Tensor) -> Tensor:
        batch, length, channels = x.shape
        kernel = self.inner.kernel_size[0]
        steps = (length - kernel) // self.stride + 1
        x = x.contiguous()
        # Window t is x[t s : t s + kernel], kernel * C_in consecutive values of x: the rows
        # overlap, so the reshape copies them once.
        windows = x.as_strided((batch, steps, kernel * channels),
                               (x.stride(0), self.stride * channels, 1))
        out = linear(windows.reshape(batch * steps, -1), self.window_matrix(), self.inner.bias)
        return out.view(batch, steps, -1)

    def _gemm_sum(self, blocks: list[tuple[Tensor, Tensor]]) -> Tensor:
        """bias + sum of rows @ weight over ``blocks`` -> [valid, C_out]. Narrow outputs (the
        full-rate convs of small models) are computed transposed, out.T = weight.T @ rows.T:
        BLAS runs a GEMM with a handful of output columns several times slower than one with a
        handful of rows. The result is then a transposed view, which ``_conv``'s final copy
        reads as it is."""
        bias = self.inner.bias
        if 1 < blocks[0][1].shape[1] < NARROW_OUT:  # one column: a GEMV, fast as it is
            blocks = [(_gemm_readable(rows), weight) for rows, weight in blocks]
            (rows, weight), rest = blocks[0], blocks[1:]
            out = weight.t() @ rows.t() if bias is None else \
                torch.addmm(bias[:, None], weight.t(), rows.t())
            for rows, weight in rest:
                out.addmm_(weight.t(), rows.t())
            return out.t()
        (rows, weight), rest = blocks[0], blocks[1:]
        out = self._matmul(rows, weight)
        for rows, weight in rest:
            out.addmm_(rows, weight)
        return out

    def _matmul(self, rows: Tensor, weight: Tensor) -> Tensor:
        bias = self.inner.bias
        return rows @ weight if bias is None else torch.addmm(bias, rows, weight)

    def pointwise_residual(self, x: Tensor, residual: Tensor) -> Tensor:
        """residual + conv(x) for a kernel-1 conv (no state), the sum folded into the GEMM."""
        weight = self._weight.matrix(self.inner.weight).view(self.inner.in_channels, -1)
        out = torch.addmm(residual.reshape(-1, weight.shape[1]), x.reshape(-1, x.shape[2]),
                          weight)
        if self.inner.bias is not None:
            out += self.inner.bias
        return out.view(*x.shape[:2], -1)


class TimeMajorConvTranspose1d(CausalConvTranspose1d):
    """CausalConvTranspose1d on x [B, T, C_in] -> [B, T * stride, C_out], for kernel = 2 *
    stride, groups 1 or depthwise (groups = channels). State ``partial`` [B, stride, C_out]:
    the second block of the last input step, without bias."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        convtr = self.inner
        self.stride = convtr.stride[0]
        if convtr.kernel_size[0] != 2 * self.stride:
            raise ValueError("time-major transposed convs need kernel = 2 * stride")
        self.depthwise = convtr.groups > 1
        if self.depthwise and not convtr.groups == convtr.in_channels == convtr.out_channels:
            raise ValueError("time-major transposed convs support groups 1 or depthwise only")
        # [K, C_out, C_in] (a linear's [K * C_out, C_in]), or [K, 1, C] when depthwise.
        self._weight = _TimeMajorWeight(self, convtr.weight, (2, 1, 0))

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ConvTransposeState:
        weight = self.inner.weight
        return ConvTransposeState(partial=torch.zeros(
            batch_size, self.stride, self.inner.out_channels,
            device=device or weight.device, dtype=dtype or weight.dtype))

    def forward(self, x: Tensor, state: ConvTransposeState | None = None,
                active: Tensor | None = None) -> Tensor:
        batch, steps, _ = x.shape
        weight = self._weight.matrix(self.inner.weight)
        if self.depthwise:
            blocks = (x[:, :, None, :] * weight[:, 0]).view(batch, steps, 2, -1)
        else:
            blocks = linear(x.reshape(-1, x.shape[2]), weight.reshape(-1, weight.shape[2]))
            blocks = blocks.view(batch, steps, 2, -1)
        out = blocks[:, :, 0].clone() if self.inner.bias is None else \
            blocks[:, :, 0] + self.inner.bias.repeat(self.stride)
        out[:, 1:] += blocks[:, :-1, 1]
        if state is not None:
            out[:, 0] += state.partial.view(batch, -1)
            masked_update(state.partial, blocks[:, -1, 1].view_as(state.partial).detach(),
                          active)
        return out.view(batch, steps * self.stride, -1)
