"""The time-major GEMM convs compute exactly what PyTorch's convs compute, in batch and in
streaming, and keep their fast weight layout through loading."""

import pytest
import torch
from torch.nn import functional as F

from services.mimi import conv as mimi_conv
from services.mimi import get_preset
from services.mimi.conv import TimeMajorConv1d, TimeMajorConvTranspose1d, elu
from services.mimi.seanet import SeanetDecoder, SeanetEncoder

torch.manual_seed(0)

CONVS = [
    dict(in_channels=1, out_channels=8, kernel_size=7),  # unfolded taps (1 input channel)
    dict(in_channels=16, out_channels=8, kernel_size=3),
    dict(in_channels=16, out_channels=8, kernel_size=3, dilation=2),
    dict(in_channels=8, out_channels=16, kernel_size=1),
    dict(in_channels=8, out_channels=16, kernel_size=8, stride=4),
    dict(in_channels=16, out_channels=16, kernel_size=4, stride=2, bias=False,
         pad_mode="replicate"),
    # Both sides of NARROW_OUT: above, row-major GEMMs; below (and above 1), transposed ones;
    # one output column stays a row-major GEMV.
    dict(in_channels=16, out_channels=32, kernel_size=3),
    dict(in_channels=4, out_channels=4, kernel_size=3, bias=False),
    dict(in_channels=8, out_channels=1, kernel_size=3),
]


def _reference_conv(conv: TimeMajorConv1d, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's conv on the left-padded channel-major input, back to time-major."""
    inner = conv.inner
    xc = x.transpose(1, 2)
    if conv.replicate:
        xc = torch.cat([xc[..., :1].expand(-1, -1, conv.padding), xc], dim=-1)
    else:
        xc = F.pad(xc, (conv.padding, 0))
    return F.conv1d(xc, inner.weight, inner.bias, inner.stride, dilation=inner.dilation
                    ).transpose(1, 2)


@pytest.fixture(params=[False, True], ids=["taps", "windowed"])
def windowed(request, monkeypatch) -> bool:
    """Both ways a conv can run: a GEMM per block of taps, or one linear over input windows
    (the large-weight layers; here every conv that may, by lowering the size threshold)."""
    if request.param:
        monkeypatch.setattr(mimi_conv, "WINDOWED_MIN_WEIGHTS", 0)
    return request.param


@pytest.mark.parametrize("kwargs", CONVS)
@pytest.mark.parametrize("sessions", [1, 3])
@torch.no_grad()
def test_conv_matches_pytorch_in_batch_and_streaming(kwargs, sessions, windowed):
    conv = TimeMajorConv1d(**kwargs)
    assert conv.windowed == (windowed and kwargs["kernel_size"] > 1
                             and kwargs.get("dilation", 1) == 1)
    unit = conv.stride
    x = torch.randn(sessions, 12 * unit, kwargs["in_channels"])
    expected = _reference_conv(conv, x)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)
    state = conv.init_state(sessions)
    parts = [conv(p, state) for p in x.split([unit * c for c in (1, 4, 2, 5)], dim=1)]
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("sessions", [1, 3])
@torch.no_grad()
def test_transposed_conv_matches_pytorch_in_batch_and_streaming(depthwise, sessions):
    channels = 6
    convtr = TimeMajorConvTranspose1d(channels, channels, 8, 4, groups=channels if depthwise
                                      else 1, bias=not depthwise)
    x = torch.randn(sessions, 10, channels)
    inner = convtr.inner
    full = F.conv_transpose1d(x.transpose(1, 2), inner.weight, inner.bias, stride=4,
                              groups=inner.groups)
    expected = full[..., :40].transpose(1, 2)
    torch.testing.assert_close(convtr(x), expected, atol=1e-5, rtol=1e-5)
    state = convtr.init_state(sessions)
    parts = [convtr(p, state) for p in x.split([1, 3, 6], dim=1)]
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_inactive_session_keeps_its_state():
    conv = TimeMajorConv1d(4, 4, 8, stride=4, pad_mode="replicate")
    x = torch.randn(2, 24, 4)
    state = conv.init_state(2)
    outs = []
    for i, part in enumerate(x.split(4, dim=1)):
        conv(torch.randn_like(part), state, torch.tensor([False, True]))  # junk for session 1
        outs.append(conv(part, state, torch.tensor([True, i % 2 == 0])))
    torch.testing.assert_close(torch.cat(outs, dim=1)[:1], conv(x[:1]))


def test_weights_keep_checkpoint_shape_and_gemm_layout_through_loading():
    conv = TimeMajorConv1d(8, 16, 8, stride=4)
    assert conv.inner.weight.shape == (16, 8, 8)
    assert conv.inner.weight.permute(2, 1, 0).is_contiguous()
    fresh = {k: torch.randn_like(v).contiguous() for k, v in conv.state_dict().items()}
    conv.load_state_dict(fresh, assign=True)
    assert conv.inner.weight.permute(2, 1, 0).is_contiguous()
    torch.testing.assert_close(conv.inner.weight, fresh["conv.conv.weight"], rtol=0, atol=0)


def test_mimi_runs_its_large_weight_convs_windowed_in_linear_layout():
    """The coarse encoder layers (after the /6 and /8 downsamplings) and the decoder's first
    conv hold most of the weight bytes at a few rows per frame: one linear each, on the weight
    laid out as [C_out, kernel, C_in]; the fine layers keep a GEMM per block of taps."""
    cfg = get_preset("mimi_202407").seanet
    for seanet in (SeanetEncoder(cfg), SeanetDecoder(cfg)):
        convs = [m for m in seanet.modules() if isinstance(m, TimeMajorConv1d)]
        for conv in convs:
            weight = conv.inner.weight
            assert conv.windowed == (weight.numel() >= mimi_conv.WINDOWED_MIN_WEIGHTS
                                     and weight.shape[2] > 1)
            assert weight.permute((0, 2, 1) if conv.windowed else (2, 1, 0)).is_contiguous()
        assert sum(c.windowed for c in convs) == (3 if isinstance(seanet, SeanetEncoder) else 1)
        for convtr in (m for m in seanet.modules() if isinstance(m, TimeMajorConvTranspose1d)):
            assert convtr.inner.weight.permute(2, 1, 0).is_contiguous()  # [2 s * C_out, C_in]


def test_fast_elu_equals_elu():
    x = torch.cat([torch.linspace(-30, 30, 10001), torch.tensor([-1e-7, 0.0, 1e-7, 100.0])])
    torch.testing.assert_close(elu(x), F.elu(x), atol=1e-7, rtol=1e-6)
    y = x.clone()
    assert elu(y, inplace=True) is y
    torch.testing.assert_close(y, F.elu(x), atol=1e-7, rtol=1e-6)


def test_unsupported_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        TimeMajorConv1d(4, 4, 5, stride=2)
    with pytest.raises(ValueError, match="kernel = 2"):
        TimeMajorConvTranspose1d(4, 4, 5, 2)


def test_seanet_runs_fine_layers_in_cache_sized_pieces():
    cfg = get_preset("mimi_202407").seanet
    # Encoder: conv, res 64, conv /4, res 128, conv /5 at < 20 samples per row, 2 frames at a
    # time; decoder: the mirror image from the x5 transposed conv on.
    assert SeanetEncoder(cfg).runs == [(0, 7, 3840), (7, 15, None)]
    assert SeanetDecoder(cfg).runs == [(0, 8, None), (8, 15, 192)]


@pytest.mark.parametrize("make, ratio", [
    (lambda: TimeMajorConv1d(4, 6, 3), 1),
    (lambda: TimeMajorConv1d(4, 6, 8, stride=4, pad_mode="replicate"), 4),
    (lambda: TimeMajorConvTranspose1d(4, 6, 8, 4), 1 / 4),
    (lambda: TimeMajorConvTranspose1d(4, 4, 4, 2, groups=4), 1 / 2),
])
def test_causality_by_gradient(make, ratio):
    module = make()
    x = torch.randn(2, 16, 4, requires_grad=True)
    y = module(x)
    cut = y.shape[1] // 2
    y[:, :cut].sum().backward()
    assert x.grad[:, : int(cut * ratio)].abs().sum() > 0
    assert x.grad[:, int(cut * ratio):].abs().max() == 0
