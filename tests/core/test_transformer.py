import dataclasses
import math

import pytest
import torch

from services.core.transformer import Transformer, TransformerConfig

torch.manual_seed(0)

CODEC_LIKE = TransformerConfig(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64,
                               norm="layer_norm", layer_scale=0.1, context=7)
LM_LIKE = TransformerConfig(d_model=32, num_heads=2, num_layers=2, dim_feedforward=132,
                            norm="rms_norm_f32", gating="silu", context=5)


def reference_attention_forward(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """Whole-sequence forward with an explicit sliding-window mask, no cache."""
    from services.core.transformer import apply_rope, rope_angles

    cfg = model.cfg
    steps = x.shape[1]
    pos = torch.arange(steps)[None].expand(x.shape[0], -1)
    delta = pos[0][:, None] - pos[0][None, :]
    mask = (delta >= 0) & (delta < (cfg.context or steps + 1))
    rope = rope_angles(pos, cfg.head_dim, cfg.max_period)[:, :, 0]  # one of q, k at a time
    for layer in model.layers:
        h = layer.norm1(x)
        q, k, v = torch.nn.functional.linear(h, layer.self_attn.in_proj_weight).view(
            x.shape[0], steps, 3, cfg.num_heads, -1).unbind(2)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        att = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        att = layer.self_attn.out_proj(att.transpose(1, 2).reshape(x.shape))
        x = x + layer.layer_scale_1(att)
        x = x + layer.layer_scale_2(layer.feed_forward(layer.norm2(x), 0))
    return x


@pytest.mark.parametrize("cfg", [CODEC_LIKE, LM_LIKE])
def test_batch_matches_explicit_sliding_window(cfg):
    model = Transformer(cfg).eval()
    x = torch.randn(2, 23, cfg.d_model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_attention_forward(model, x),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [CODEC_LIKE, LM_LIKE])
@pytest.mark.parametrize("chunks", [[1] * 23, [2] * 11 + [1], [3, 1, 4, 1, 5, 9]])
def test_streaming_equals_batch(cfg, chunks):
    model = Transformer(cfg).eval()
    x = torch.randn(3, sum(chunks), cfg.d_model)
    state = model.init_state(3, max_chunk=max(chunks))
    with torch.no_grad():
        whole = model(x)
        parts = torch.cat([model(p, state) for p in x.split(chunks, dim=1)], dim=1)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)


def test_reset_and_inactive_sessions_are_independent():
    model = Transformer(LM_LIKE).eval()
    x = torch.randn(3, 20, LM_LIKE.d_model)
    state = model.init_state(3)
    outs = []
    active = torch.tensor([True, True, True])
    with torch.no_grad():
        for t in range(20):
            if t == 9:
                state.reset(torch.tensor([False, True, False]))
            # session 2 idles on odd steps: its step t happens only on even calls
            outs.append(model(x[:, t:t + 1], state, active))
        alone1 = model(x[1:2, 9:])
        alone0 = model(x[0:1])
    stream = torch.cat(outs, dim=1)
    torch.testing.assert_close(stream[0:1], alone0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stream[1:2, 9:], alone1, atol=1e-5, rtol=1e-5)


def test_inactive_session_does_not_advance():
    model = Transformer(LM_LIKE).eval()
    x = torch.randn(2, 12, LM_LIKE.d_model)
    state = model.init_state(2)
    out0 = []
    with torch.no_grad():
        for t in range(12):
            model(x[:, t:t + 1], state, torch.tensor([False, True]))
        for t in range(12):
            out0.append(model(x[:, t:t + 1], state, torch.tensor([True, False]))[0:1])
        alone = model(x[0:1])
    torch.testing.assert_close(torch.cat(out0, dim=1), alone, atol=1e-5, rtol=1e-5)
    assert state.offset.tolist() == [12, 12]


def test_causality_gradient():
    model = Transformer(CODEC_LIKE)
    x = torch.randn(1, 16, CODEC_LIKE.d_model, requires_grad=True)
    y = model(x)
    y[0, 5].sum().backward()
    assert x.grad[0, 6:].abs().max() == 0
    assert x.grad[0, :6].abs().max() > 0


def test_weights_per_step_selects_slices():
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=1, dim_feedforward=48,
                            norm="rms_norm_f32", gating="silu", context=None,
                            positional_embedding="none", weights_per_step=3)
    model = Transformer(cfg).eval()
    x = torch.randn(1, 1, 16)
    with torch.no_grad():
        outs = [model(x, model.init_state(1, capacity=3), weight_index=i) for i in range(3)]
    assert not torch.allclose(outs[0], outs[1])
    assert model.layers[0].self_attn.in_proj_weight.shape == (3 * 48, 16)
    assert model.layers[0].self_attn.out_proj.weight.shape == (48, 16)


CROSS = TransformerConfig(d_model=32, num_heads=4, num_layers=2, dim_feedforward=132,
                          norm="rms_norm_f32", gating="silu", context=6, cross_attention=True)


def test_cross_attention_keys_and_explicit_math():
    model = Transformer(CROSS).eval()
    layer = model.layers[0]
    assert layer.cross_attention.in_proj_weight.shape == (96, 32)
    assert layer.cross_attention.out_proj.weight.shape == (32, 32)
    assert {"layers.0.norm_cross.weight", "layers.0.norm_cross.bias"} <= set(model.state_dict())
    x, src = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    w = layer.cross_attention.in_proj_weight
    q = (x @ w[:32].T).view(2, 5, 4, 8).transpose(1, 2)
    k = (src @ w[32:64].T).view(2, 7, 4, 8).transpose(1, 2)
    v = (src @ w[64:].T).view(2, 7, 4, 8).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
    expected = layer.cross_attention.out_proj(att.transpose(1, 2).reshape(2, 5, 32))
    with torch.no_grad():
        got = layer.cross_attention(x, *layer.cross_attention.project_source(src))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_streaming_equals_batch_per_session():
    model = Transformer(CROSS).eval()
    x, src = torch.randn(3, 11, 32), torch.randn(3, 4, 32)
    state = model.init_state(3, cross_length=4)
    with torch.no_grad():
        whole = model(x, cross_source=src)
        # Sources set session by session (as sessions join), then reset one and set it again.
        for b in (2, 0, 1):
            model.set_cross_source(state, src[b:b + 1], torch.tensor([b]))
        steps = [model(x[:, t:t + 1], state) for t in range(4)]
        state.reset(torch.tensor([False, True, False]))
        assert state.cross_keys[:, 1].abs().max() == 0
        model.set_cross_source(state, src[1:2], torch.tensor([1]))
        steps += [model(x[:, t:t + 1], state) for t in range(4, 11)]
        restarted = model(x[1:2, 4:], cross_source=src[1:2])
        without_source = Transformer(dataclasses.replace(CROSS, cross_attention=False))
    stream = torch.cat(steps, dim=1)
    torch.testing.assert_close(stream[[0, 2]], whole[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stream[1:2, 4:], restarted, atol=1e-5, rtol=1e-5)
    assert not hasattr(without_source.layers[0], "norm_cross")
    with pytest.raises(ValueError, match="source"):
        model(x)


@pytest.mark.parametrize("cfg", [dataclasses.replace(LM_LIKE, context=None, weights_per_step=3),
                                 dataclasses.replace(CODEC_LIKE, context=None)])
def test_fresh_context_steps_equal_forward_on_a_rewound_state(cfg):
    """The depformer's entry point (step k of a context restarted at 0) gives forward's
    outputs and gradients exactly, frame after frame on one reused state."""
    model = Transformer(cfg)
    steps = 3
    state = model.init_state(4, capacity=steps)
    fresh = model.init_state(4, capacity=steps)
    for _ in range(2):  # two frames on the same states: the rewind at step 0 is what resets
        x = torch.randn(4, steps, cfg.d_model, requires_grad=True)
        fresh.positions.fill_(-1)
        fresh.offset.zero_()
        expected = torch.cat([model(x[:, k:k + 1], fresh, weight_index=k % cfg.weight_sets)
                              for k in range(steps)], dim=1)
        got = torch.cat([model.fresh_context_step(x[:, k:k + 1], state, k, k % cfg.weight_sets)
                         for k in range(steps)], dim=1)
        assert torch.equal(got, expected)
        assert torch.equal(state.positions, fresh.positions)
        assert torch.equal(state.offset, fresh.offset)
        grad_expected, = torch.autograd.grad(expected.square().sum(), x)
        grad_got, = torch.autograd.grad(got.square().sum(), x)
        assert torch.equal(grad_got, grad_expected)
        # Without autograd the few-row linears take this project's kernel (another fp32
        # summation order than torch's), so the inference-mode reference is forward's, also
        # without autograd.
        with torch.inference_mode():
            plain = torch.cat([model.fresh_context_step(x[:, k:k + 1], state, k,
                                                        k % cfg.weight_sets)
                               for k in range(steps)], dim=1)
            fresh.positions.fill_(-1)
            fresh.offset.zero_()
            plain_expected = torch.cat([model(x[:, k:k + 1], fresh,
                                              weight_index=k % cfg.weight_sets)
                                        for k in range(steps)], dim=1)
        assert torch.equal(plain, plain_expected)
        # Without autograd the few-row linears and few-query attention are this project's CPU
        # kernels: torch's results up to fp32 rounding.
        torch.testing.assert_close(plain, expected.detach(), rtol=1e-5, atol=1e-5)


def _real_rope(x: torch.Tensor, positions: torch.Tensor, max_period: float) -> torch.Tensor:
    """RoPE written out on the interleaved pairs (x[2i], x[2i+1]) in real arithmetic."""
    half = x.shape[-1] // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32)
                      * (-2.0 * math.log(max_period) / x.shape[-1]))
    angles = positions.float()[..., None, None, None] * freqs
    cos, sin = torch.cos(angles), torch.sin(angles)
    re, im = x[..., 0::2], x[..., 1::2]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)


@pytest.mark.parametrize("head_dim", [16, 64])
def test_complex_rope_equals_real_rotation_exactly(head_dim):
    """apply_rope's one complex product, read in place from the fused q/k slice of the
    projection (not contiguous), gives the same bits as the real formula."""
    from services.core.transformer import apply_rope, rope_angles

    positions = torch.arange(300)[None, 5:].expand(3, -1) * 7
    qkv = 4 * torch.randn(3, positions.shape[1], 3, 4, head_dim)
    rotated = apply_rope(qkv[:, :, :2], rope_angles(positions, head_dim, 10_000.0))
    assert torch.equal(rotated, _real_rope(qkv[:, :, :2], positions, 10_000.0))
