import pytest
import torch

from services.core.conv import (
    CausalConv1d,
    CausalConvTranspose1d,
    conv_left_padding,
    transposed_conv_tail,
)

torch.manual_seed(0)


def test_padding_arithmetic():
    assert conv_left_padding(7, 1) == 6
    assert conv_left_padding(8, 4) == 4
    assert conv_left_padding(3, 1, dilation=2) == 4
    assert conv_left_padding(4, 2) == 2
    assert transposed_conv_tail(16, 8) == 8
    assert transposed_conv_tail(4, 2) == 2


def test_conv_matches_left_padded_reference():
    conv = CausalConv1d(3, 5, kernel_size=8, stride=4)
    x = torch.randn(2, 3, 40)
    expected = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (4, 0)), conv.inner.weight, conv.inner.bias, stride=4)
    torch.testing.assert_close(conv(x), expected)


def test_replicate_padding_repeats_first_sample():
    conv = CausalConv1d(2, 2, kernel_size=4, stride=2, bias=False, pad_mode="replicate")
    x = torch.randn(1, 2, 10)
    padded = torch.cat([x[..., :1].expand(1, 2, 2), x], dim=-1)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv1d(padded, conv.inner.weight,
                                                                   stride=2))


def test_transposed_conv_trims_right():
    convtr = CausalConvTranspose1d(4, 3, kernel_size=8, stride=4)
    x = torch.randn(2, 4, 6)
    full = torch.nn.functional.conv_transpose1d(x, convtr.inner.weight, convtr.inner.bias,
                                                stride=4)
    torch.testing.assert_close(convtr(x), full[..., :24])


MODULES = [
    lambda: CausalConv1d(3, 4, kernel_size=7),
    lambda: CausalConv1d(3, 4, kernel_size=3, dilation=2),
    lambda: CausalConv1d(3, 4, kernel_size=8, stride=4),
    lambda: CausalConv1d(3, 3, kernel_size=4, stride=2, bias=False, pad_mode="replicate"),
    lambda: CausalConvTranspose1d(3, 4, kernel_size=8, stride=4),
    lambda: CausalConvTranspose1d(4, 4, kernel_size=4, stride=2, groups=4, bias=False),
]


def _unit(module) -> int:
    return module.stride if isinstance(module, CausalConv1d) else 1


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("chunks", [[1] * 12, [3, 5, 4], [12], [2, 1, 9]])
def test_streaming_equals_batch(make, chunks):
    module = make().eval()
    unit = _unit(module)
    x = torch.randn(3, module.inner.in_channels, 12 * unit)
    state = module.init_state(3)
    with torch.no_grad():
        whole = module(x)
        parts = torch.cat([module(p, state) for p in x.split([c * unit for c in chunks], -1)],
                          dim=-1)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make", MODULES)
def test_reset_one_session_while_another_continues(make):
    module = make().eval()
    unit = _unit(module)
    x = torch.randn(2, module.inner.in_channels, 10 * unit)
    state = module.init_state(2)
    with torch.no_grad():
        first = module(x[..., : 4 * unit], state)
        state.reset(torch.tensor([True, False]))
        second = module(x[..., 4 * unit:], state)
        restarted = module(x[:1, :, 4 * unit:])
        continuous = module(x[1:])
    torch.testing.assert_close(second[:1], restarted, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.cat([first[1:], second[1:]], -1), continuous,
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make", MODULES)
def test_inactive_session_keeps_its_state(make):
    module = make().eval()
    unit = _unit(module)
    x = torch.randn(2, module.inner.in_channels, 6 * unit)
    state = module.init_state(2)
    with torch.no_grad():
        outs = []
        for i, p in enumerate(x.split(unit, -1)):
            # session 1 also gets a junk call, masked out, between its real ones
            module(torch.randn_like(p), state, torch.tensor([False, True]) if i else None)
            state.reset(torch.tensor([True, False])) if i == 0 else None
            outs.append(module(p, state, torch.tensor([True, False])))
        alone = module(x[:1])
    torch.testing.assert_close(torch.cat(outs, -1)[:1], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make", MODULES)
def test_causality_gradient(make):
    module = make()
    unit = _unit(module)
    x = torch.randn(1, module.inner.in_channels, 8 * unit, requires_grad=True)
    y = module(x)
    cut = y.shape[-1] // 2
    y[..., :cut].sum().backward()
    # outputs before `cut` depend only on inputs before cut * (input/output ratio)
    ratio = x.shape[-1] / y.shape[-1]
    assert x.grad[..., int(cut * ratio):].abs().max() == 0


def test_bad_length_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of the stride"):
        CausalConv1d(1, 1, kernel_size=4, stride=2)(torch.randn(1, 1, 5))
