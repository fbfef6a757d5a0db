"""The fp32 few-row linear (services/core/kernels/float_linear.cpp): equal to F.linear / addmm
to fp32 rounding for every row count up to past MAX_ROWS and sizes off its vector width, the
same on 1 and 2 threads; torch's path when autograd, many rows, another dtype or kernels off;
and Mimi's streaming codes unchanged by it."""

import pytest
import torch
from torch.nn import functional as F

from services.core import kernels
from services.core.kernels import float_linear
from services.mimi import build_random_mimi

needs_kernel = pytest.mark.skipif(not kernels.available(),
                                  reason="the CPU kernels do not build on this machine")


def assert_matches(result: torch.Tensor, expected: torch.Tensor) -> None:
    # Relative to the output's range: sums that cancel to near 0 are not relatively exact in
    # any summation order.
    torch.testing.assert_close(result, expected, rtol=1e-5,
                               atol=1e-5 * expected.abs().max().item())


def kernel(x, weight, bias=None, beta=1.0, alpha=1.0):
    return kernels.require().float_linear(x, weight, bias, beta, alpha)


@needs_kernel
@pytest.mark.parametrize("rows", [*range(1, 11), 13, 16, 17])
@pytest.mark.parametrize("out, features", [(37, 29), (16, 64), (101, 301), (1, 5), (33, 1),
                                           (515, 263), (2048, 512)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_equals_f_linear(rows, out, features, with_bias):
    g = torch.Generator().manual_seed(rows)
    x, weight = torch.randn(rows, features, generator=g), torch.randn(out, features, generator=g)
    bias = torch.randn(out, generator=g) if with_bias else None
    result = kernel(x, weight, bias)
    assert result.shape == (rows, out) and result.dtype == torch.float32
    assert_matches(result, F.linear(x, weight, bias))


@needs_kernel
def test_addmm_leading_dims_and_strided_weight():
    g = torch.Generator().manual_seed(0)
    bias, x = torch.randn(45, generator=g), torch.randn(3, 70, generator=g)
    weight = torch.randn(90, 80, generator=g)[::2, 5:75]  # row stride 160, unit column stride
    assert_matches(kernel(x, weight, bias, 0.5, -2.0),
                   torch.addmm(bias, x, weight.t(), beta=0.5, alpha=-2.0))
    x = torch.randn(2, 3, 70, generator=g)
    result = float_linear.linear(x, weight, bias)
    assert result.shape == (2, 3, 45)
    assert_matches(result, F.linear(x, weight, bias))


@needs_kernel
def test_threads_split_the_work_without_changing_it():
    g = torch.Generator().manual_seed(1)
    x, weight = torch.randn(3, 1000, generator=g), torch.randn(1500, 1000, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel(x, weight)
        torch.set_num_threads(2)
        two = kernel(x, weight)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def _calls(monkeypatch) -> list[int]:
    """Counts the kernel's uses by ``float_linear``."""
    calls = []
    module = kernels.load()
    if module is not None:
        class Counting:
            def float_linear(self, *args):
                calls.append(1)
                return module.float_linear(*args)

            def __getattr__(self, name: str):  # the other kernels, uncounted
                return getattr(module, name)
        monkeypatch.setattr(kernels, "_module", Counting())
    return calls


@needs_kernel
def test_the_kernel_runs_only_where_it_wins_and_applies(monkeypatch):
    calls = _calls(monkeypatch)
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(24, 40, generator=g)
    bias = torch.randn(24, generator=g)
    float_linear.linear(torch.randn(2, 40, generator=g), weight)
    float_linear.addmm(bias, torch.randn(2, 40, generator=g), weight, alpha=-2)
    assert len(calls) == 2
    fallbacks = [
        (torch.randn(float_linear.MAX_ROWS + 1, 40), weight),  # many rows: torch's GEMM
        (torch.randn(2, 40, dtype=torch.float64), weight.double()),
        (torch.randn(2, 40, requires_grad=True), weight),  # autograd
        (torch.randn(2, 40), weight.requires_grad_()),
    ]
    for x, w in fallbacks:
        assert_matches(float_linear.linear(x, w).detach(), F.linear(x, w).detach())
    with torch.no_grad():  # no autograd: the kernel again, even on a weight with grad
        float_linear.linear(torch.randn(2, 40), weight)
    assert len(calls) == 3


def test_kernels_off_means_torch(monkeypatch):
    monkeypatch.setenv("MOSHI_CPU_KERNELS", "0")
    kernels.reset()
    try:
        with pytest.warns(RuntimeWarning, match="MOSHI_CPU_KERNELS=0"):
            x, weight = torch.randn(2, 40), torch.randn(24, 40)
            assert torch.equal(float_linear.linear(x, weight), F.linear(x, weight))
        bias = torch.randn(24)
        assert torch.equal(float_linear.addmm(bias, x, weight, alpha=-2),
                           torch.addmm(bias, x, weight.t(), alpha=-2))
    finally:
        monkeypatch.delenv("MOSHI_CPU_KERNELS")
        kernels.reset()


@needs_kernel
@torch.inference_mode()
def test_mimi_streaming_codes_do_not_change(monkeypatch):
    """A streaming encode (2 rows per transformer step, 1 per RVQ level) gives the same codes
    with the kernel as with torch, and audio equal to fp32 rounding."""
    model = build_random_mimi("tiny", seed=0)
    pcm = 0.1 * torch.randn(1, 1, model.frame_size * 6, generator=torch.Generator().manual_seed(3))

    def stream() -> tuple[torch.Tensor, torch.Tensor]:
        enc, dec = model.init_encoder_state(1), model.init_decoder_state(1)
        codes = [model.encode_step(f, enc) for f in pcm.split(model.frame_size, dim=-1)]
        audio = [model.decode_step(c, dec) for c in codes]
        return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)

    calls = _calls(monkeypatch)
    codes, audio = stream()
    assert calls  # the kernel did run
    monkeypatch.setattr(float_linear, "MAX_ROWS", 0)  # torch everywhere
    torch_codes, torch_audio = stream()
    assert torch.equal(codes, torch_codes)
    torch.testing.assert_close(audio, torch_audio, rtol=0, atol=1e-5)
