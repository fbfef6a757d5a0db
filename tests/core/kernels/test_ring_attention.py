"""The few-query ring attention CPU kernel (services/core/kernels/ring_attention.cpp): equal to
torch's SDPA to fp32 rounding on partly filled rings with random masks, for 1..4 queries and
head dims with and without a vector tail; zeros for an all-masked row as SDPA; the same result
on 1 and 2 threads; a bf16 ring beside fp32 queries; torch's path under autograd, for bf16
compute and with the kernels off; and the same greedy tokens on a tiny LM with the kernel on
and off (fp32 and bf16 rings)."""

import pytest
import torch
from torch.nn import functional as F

from services.core import kernels
from services.core.kernels import attention
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import prepare_for_inference
from services.moshi_lm.model import LMModel
from tests.moshi_lm.conftest import tiny_config

needs_kernel = pytest.mark.skipif(not kernels.available(),
                                  reason="the CPU kernels do not build on this machine")


def ring(batch: int, heads: int, steps: int, capacity: int, dim: int, filled: float,
         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q as the transformer passes it (a transposed view), a ring with garbage in the slots
    never written, and a mask: the written slots, each query seeing a random subset."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, steps, heads, dim, generator=g).transpose(1, 2)
    keys = torch.randn(batch, heads, capacity, dim, generator=g) * 3
    values = torch.randn(batch, heads, capacity, dim, generator=g)
    written = torch.rand(batch, 1, 1, capacity, generator=g) < filled
    mask = written & (torch.rand(batch, 1, steps, capacity, generator=g) < 0.8)
    return q, keys, values, mask


@needs_kernel
@pytest.mark.parametrize("dim", [64, 128, 37])
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("filled", [0.1, 0.6, 1.0])
def test_equals_sdpa(dim, steps, filled):
    q, keys, values, mask = ring(3, 5, steps, 70, dim, filled, seed=dim + steps)
    mask[0, 0, 0, :5] = True  # at least one allowed key in row 0 even on a sparse ring
    got = attention.attend(q, keys, values, mask)
    expected = F.scaled_dot_product_attention(q, keys, values, mask)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=5e-6)
    # Both are fp32 roundings of the exact result, the kernel's no further from it than torch's.
    exact = F.scaled_dot_product_attention(q.double(), keys.double(), values.double(), mask)
    torch_error = (expected - exact).abs().max().item()
    assert (got - exact).abs().max().item() <= max(3 * torch_error, 2e-6)


@needs_kernel
@pytest.mark.parametrize("dim", [64, 37])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("filled", [0.3, 1.0])
def test_a_bf16_ring_equals_sdpa_over_the_widened_ring(dim, steps, filled, monkeypatch):
    q, keys, values, mask = ring(2, 3, steps, 50, dim, filled, seed=dim * steps)
    mask[0, 0, 0, :5] = True
    keys, values = keys.bfloat16(), values.bfloat16()
    got = attention.attend(q, keys, values, mask)
    assert got.dtype == torch.float32
    expected = F.scaled_dot_product_attention(q, keys.float(), values.float(), mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=5e-6)
    monkeypatch.setattr(attention, "MAX_QUERIES", 0)  # torch's path widens the ring too
    assert torch.equal(attention.attend(q, keys, values, mask), expected)


@needs_kernel
def test_broadcast_mask_and_no_mask():
    q, keys, values, _ = ring(2, 3, 1, 40, 64, 1.0)
    mask = (torch.arange(40) <= 17).view(1, 1, 1, 40)  # the depformer's shared mask
    torch.testing.assert_close(attention.attend(q, keys, values, mask),
                               F.scaled_dot_product_attention(q, keys, values, mask),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention.attend(q, keys, values),
                               F.scaled_dot_product_attention(q, keys, values),
                               rtol=1e-5, atol=1e-6)


@needs_kernel
def test_a_fully_masked_row_gives_zeros_as_sdpa():
    q, keys, values, mask = ring(2, 2, 3, 30, 64, 1.0)
    mask[1, 0, 1] = False
    got = attention.attend(q, keys, values, mask)
    expected = F.scaled_dot_product_attention(q, keys, values, mask)
    assert torch.equal(got[1, :, 1], torch.zeros_like(got[1, :, 1]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_masked_slots_are_not_read():
    """NaN in every slot the mask hides: torch's result would be NaN, the kernel's is not."""
    q, keys, values, mask = ring(1, 4, 2, 50, 128, 0.3)
    mask[..., :3] = True
    hidden = ~mask.any(dim=2).expand(-1, keys.shape[1], -1)  # [B, H, C]: no query sees it
    keys[hidden], values[hidden] = float("nan"), float("nan")
    got = attention.attend(q, keys, values, mask)
    expected = F.scaled_dot_product_attention(q, keys.nan_to_num(0.0), values.nan_to_num(0.0),
                                              mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_one_and_two_threads_are_identical():
    q, keys, values, mask = ring(4, 16, 2, 100, 128, 0.7)  # 64 (b, h) pairs > threads
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = attention.attend(q, keys, values, mask)
        torch.set_num_threads(2)
        two = attention.attend(q, keys, values, mask)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two)


def test_grad_bf16_and_long_chunks_use_torch(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *args: calls.append(1) or sdpa(*args))
    q, keys, values, mask = ring(1, 2, 2, 20, 64, 1.0)
    attention.attend(q.requires_grad_(), keys, values, mask).sum().backward()
    assert q.grad is not None
    attention.attend(q.detach().bfloat16(), keys.bfloat16(), values.bfloat16(), mask)
    long_q = torch.randn(1, 2, attention.MAX_QUERIES + 1, 64)
    attention.attend(long_q, keys, values, mask[:, :, :1])
    assert len(calls) == 3
    with torch.no_grad():  # a leaf that requires grad under no_grad: the kernel is fine
        attention.attend(q, keys, values, mask)
    assert len(calls) == 3 + (not kernels.available())


@pytest.fixture
def fresh_kernel_state():
    """Each test sees load() decide anew, and later tests too (the build itself is cached)."""
    kernels.reset()
    yield
    kernels.reset()


def test_the_kernel_can_be_turned_off(monkeypatch, fresh_kernel_state):
    monkeypatch.setenv("MOSHI_CPU_KERNELS", "0")
    q, keys, values, mask = ring(1, 2, 1, 20, 64, 1.0)
    with pytest.warns(RuntimeWarning, match="MOSHI_CPU_KERNELS=0"):
        got = attention.attend(q, keys, values, mask)
    assert torch.equal(got, F.scaled_dot_product_attention(q, keys, values, mask))


def greedy_run(model: LMModel, steps: int = 20, kv_dtype: torch.dtype | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = LMGenerator(model, kv_dtype=kv_dtype)
    state = generator.init_state(2, SamplingSettings.greedy())
    assert state.transformer.keys.dtype == (kv_dtype or torch.float32)
    g = torch.Generator().manual_seed(1)
    tokens, logits = [], []
    for _ in range(steps):  # past the context (8): the ring wraps
        codes = torch.randint(0, model.cfg.card, (2, model.cfg.num_input_codebooks), generator=g)
        result = generator.step(state, codes, return_logits=True)
        tokens.append(torch.cat([result.text[:, None], result.audio], dim=1))
        logits.append(result.text_logits)
    return tokens, torch.stack(logits)


@needs_kernel
@pytest.mark.parametrize("kv_dtype", [None, torch.bfloat16])
def test_greedy_tokens_equal_with_the_kernel_on_and_off(monkeypatch, fresh_kernel_state,
                                                         kv_dtype):
    """Also with a bf16 ring beside fp32 compute: the kernel widening each element as it
    loads it equals torch's SDPA over the widened ring."""
    torch.manual_seed(0)
    model = prepare_for_inference(LMModel(tiny_config(dim=64, num_heads=4)))
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *args: calls.append(1) or sdpa(*args))
    fast_tokens, fast_logits = greedy_run(model, kv_dtype=kv_dtype)
    assert not calls  # every step attended through the kernel
    monkeypatch.setattr(attention, "MAX_QUERIES", 0)  # this kernel off, the others still on
    ref_tokens, ref_logits = greedy_run(model, kv_dtype=kv_dtype)
    assert calls
    for fast, ref in zip(fast_tokens, ref_tokens, strict=True):
        assert torch.equal(fast, ref)
    torch.testing.assert_close(fast_logits, ref_logits, rtol=1e-4, atol=1e-5)
