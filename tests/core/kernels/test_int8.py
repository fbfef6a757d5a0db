"""The weight-only int8 CPU kernel (services/core/kernels/int8_linear.cpp): equal to a plain
fp32 reference for every batch size and for sizes that are not multiples of its block, in fp32 and
bf16, with a bias; the same greedy tokens as the reference on a tiny LM; and the fallback to
torch's kernels when it is off or cannot be built."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from services.core import kernels
from services.core.kernels import int8 as int8_kernel
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import prepare_for_inference
from services.moshi_lm.model import LMModel
from services.moshi_lm.quantize import (
    BlockedInt8Weight,
    Int8Weight,
    quantize_int8,
    quantize_rows,
)
from tests.moshi_lm.conftest import tiny_config

needs_kernel = pytest.mark.skipif(not kernels.available(),
                                  reason="the int8 kernel does not build on this machine")


def random_int8(out: int, features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (out, features), generator=g, dtype=torch.int8)
    return q, torch.rand(out, generator=g) * 0.01 + 1e-4


def reference(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    out = x.float() @ (q.float() * scales[:, None]).T
    return out if bias is None else out + bias.float()


def kernel(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    return int8_kernel.linear(x, int8_kernel.pack(q), int8_kernel.pad_scales(scales), bias,
                              q.shape[0])


def assert_matches(result: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    # Relative to the output's range: sums that cancel to near 0 are not relatively exact in
    # any summation order.
    torch.testing.assert_close(result.float(), expected, rtol=rtol,
                               atol=1e-5 * expected.abs().max().item())


@needs_kernel
@pytest.mark.parametrize("rows", range(1, 10))
@pytest.mark.parametrize("out, features", [(37, 29), (16, 64), (100, 301), (1, 5), (33, 1)])
def test_equals_the_fp32_reference(rows, out, features):
    q, scales = random_int8(out, features, seed=rows)
    x = torch.randn(rows, features, generator=torch.Generator().manual_seed(rows))
    result = kernel(x, q, scales)
    assert result.shape == (rows, out) and result.dtype == torch.float32
    assert_matches(result, reference(x, q, scales))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bias_leading_dims_and_bf16(dtype):
    q, scales = random_int8(45, 70)
    x = torch.randn(2, 3, 70).to(dtype)
    bias = torch.randn(45).to(dtype)
    result = kernel(x, q, scales, bias)
    assert result.shape == (2, 3, 45) and result.dtype == dtype
    # bf16: the fp32 result rounded once to bf16 (8 bits).
    rtol = 1e-5 if dtype == torch.float32 else 2 ** -8
    assert_matches(result, reference(x, q, scales, bias), rtol)


@needs_kernel
def test_threads_split_the_work_without_changing_it():
    q, scales = random_int8(1000, 700)  # many chunks: the threads share them
    x = torch.randn(5, 700)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = kernel(x, q, scales)
        torch.set_num_threads(2)
        assert torch.equal(kernel(x, q, scales), single)
    finally:
        torch.set_num_threads(threads)
    assert_matches(single, reference(x, q, scales))


@needs_kernel
def test_blocked_weight_is_a_linear_weight():
    layer = nn.Linear(50, 19)
    weight = BlockedInt8Weight(layer.weight)
    assert weight.shape == (19, 50)
    q, scales = weight.int8_values()
    expected_q, expected_scales = quantize_rows(layer.weight)
    assert torch.equal(q, expected_q) and torch.equal(scales, expected_scales)
    x = torch.randn(3, 50)
    with torch.no_grad():
        assert_matches(F.linear(x, weight, layer.bias), reference(x, q, scales, layer.bias))
        # Close to the float layer (int8 rounding only).
        torch.testing.assert_close(F.linear(x, weight, layer.bias), layer(x), atol=0.02,
                                   rtol=0.02)


def reference_linear(x: torch.Tensor, weight: BlockedInt8Weight,
                     bias: torch.Tensor | None) -> torch.Tensor:
    return reference(x, *weight.int8_values(), bias).to(x.dtype)


def greedy_run(model: LMModel, steps: int = 8) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = LMGenerator(model)
    state = generator.init_state(2, SamplingSettings.greedy())
    codes = torch.arange(2 * model.cfg.num_input_codebooks).view(2, -1) % model.cfg.card
    tokens, logits = [], []
    for _ in range(steps):
        result = generator.step(state, codes, return_logits=True)
        tokens.append(torch.cat([result.text[:, None], result.audio], dim=1))
        logits.append(result.text_logits)
    return tokens, torch.stack(logits)


@needs_kernel
def test_greedy_tokens_equal_the_reference_path(monkeypatch):
    torch.manual_seed(0)
    model = prepare_for_inference(LMModel(tiny_config(dim=48, num_heads=4)), "int8-weight")
    assert sum(isinstance(b, BlockedInt8Weight) for b in model.buffers()) == 4 * 2 + 1
    fast_tokens, fast_logits = greedy_run(model)
    monkeypatch.setattr(BlockedInt8Weight, "linear", staticmethod(reference_linear))
    ref_tokens, ref_logits = greedy_run(model)
    for fast, ref in zip(fast_tokens, ref_tokens, strict=True):
        assert torch.equal(fast, ref)
    assert_matches(fast_logits, ref_logits, rtol=1e-4)


@pytest.fixture
def fresh_kernel_state():
    """Each test sees load() decide anew, and later tests too (the build itself is cached)."""
    kernels.reset()
    yield
    kernels.reset()


@pytest.mark.parametrize("env", ["MOSHI_CPU_KERNELS", "MOSHI_INT8_KERNEL"])
def test_the_kernel_can_be_turned_off(monkeypatch, fresh_kernel_state, env):
    monkeypatch.setenv(env, "0")
    layers = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 16))
    with pytest.warns(RuntimeWarning, match=f"{env}=0"):
        assert quantize_int8(layers, "int8-weight", torch.float32) == 2
    assert all(isinstance(m.weight, Int8Weight) for m in layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per use
        assert not kernels.available()
        layers(torch.randn(2, 32))


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, fresh_kernel_state):
    def broken_build():
        raise OSError("no compiler here")

    monkeypatch.setattr(kernels, "_build", broken_build)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        model = prepare_for_inference(LMModel(tiny_config()), "int8-weight")
    # torch's kernel takes the weights whose width is a multiple of 16 (not the FFN output)
    assert sum(isinstance(b, Int8Weight) for b in model.buffers()) == 3 * 2 + 1
    assert not any(isinstance(b, BlockedInt8Weight) for b in model.buffers())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens, _ = greedy_run(model, steps=2)
    assert len(tokens) == 2
    with pytest.raises(RuntimeError, match="unavailable"):
        kernel(torch.randn(1, 5), *random_int8(3, 5))


def test_the_kernels_build_where_the_cpu_and_toolchain_allow():
    """The kernel tests skip where the kernels cannot build; on a machine that has AVX2, FMA
    and ninja a failed build is a bug (e.g. two source files defining one helper), not a
    reason to skip them all."""
    from torch.utils import cpp_extension

    if kernels._missing_cpu_flags() or not cpp_extension.is_ninja_available():
        pytest.skip("this machine cannot build the kernels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning would be the build's error
        assert kernels.available()
