"""Parity with Kyutai's reference on the golden files. Streaming must equal the reference's
*batch* outputs (docs/architecture.md#golden-files says why `codes_stream` is informative
only)."""

import torch

ATOL = 1e-4


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.inference_mode()
def test_batch_encode_matches_reference(dev_mimi, golden):
    pcm, expected = golden["pcm"][None, None], golden["codes_batch"]
    assert torch.equal(dev_mimi.encode(pcm, num_codebooks=expected.shape[0])[0], expected)
    assert _max_abs(dev_mimi.encode_to_latent(pcm)[0], golden["latent"]) < ATOL


@torch.inference_mode()
def test_streaming_encode_frame_by_frame_matches_reference_batch(dev_mimi, golden):
    expected = golden["codes_batch"]
    state = dev_mimi.init_encoder_state(1)
    codes = [dev_mimi.encode_step(frame, state, num_codebooks=expected.shape[0])
             for frame in golden["pcm"][None, None].split(dev_mimi.frame_size, dim=-1)]
    assert torch.equal(torch.cat(codes, dim=-1)[0], expected)


@torch.inference_mode()
def test_quantizer_decode_matches_reference(dev_mimi, golden):
    qlatent = dev_mimi.decode_latent(golden["codes_batch"][None])[0]
    assert _max_abs(qlatent, golden["qlatent"]) < ATOL


@torch.inference_mode()
def test_batch_and_streaming_decode_match_reference(dev_mimi, golden):
    codes = golden["codes_batch"][None]
    assert _max_abs(dev_mimi.decode(codes)[0, 0], golden["pcm_dec_batch"]) < ATOL
    state = dev_mimi.init_decoder_state(1)
    pcm = torch.cat([dev_mimi.decode_step(frame, state) for frame in codes.split(1, dim=-1)],
                    dim=-1)
    assert _max_abs(pcm[0, 0], golden["pcm_dec_batch"]) < ATOL
