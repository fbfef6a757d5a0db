"""Streaming equals batch for the whole codec, for any chunking and several independent
sessions; the model is causal (checked by gradients)."""

import pytest
import torch

from services.mimi.model import MimiModel

FRAMES = 14  # past the dev model's 20-step (10-frame) attention window
ATOL = 1e-5


def _signal(sessions: int, frames: int, frame_size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(sessions, 1, frames * frame_size, generator=g)


def _split(total: int, chunks: list[int]) -> list[int]:
    assert sum(chunks) == total
    return chunks


CHUNKINGS = [[1] * FRAMES, [3, 5, 1, 4, 1], [FRAMES], [2, 7, 5]]


@pytest.mark.parametrize("sessions", [1, 3])
@pytest.mark.parametrize("chunks", CHUNKINGS)
@torch.inference_mode()
def test_streaming_encode_equals_batch(dev_mimi: MimiModel, sessions, chunks):
    wav = _signal(sessions, FRAMES, dev_mimi.frame_size)
    state = dev_mimi.init_encoder_state(sessions)
    pieces = wav.split([c * dev_mimi.frame_size for c in _split(FRAMES, chunks)], dim=-1)
    latent = torch.cat([dev_mimi.encode_latent_step(p, state) for p in pieces], dim=-1)
    torch.testing.assert_close(latent, dev_mimi.encode_to_latent(wav), atol=ATOL, rtol=0)
    state.reset()
    codes = torch.cat([dev_mimi.encode_step(p, state) for p in pieces], dim=-1)
    assert torch.equal(codes, dev_mimi.encode(wav))


@pytest.mark.parametrize("sessions", [1, 3])
@pytest.mark.parametrize("chunks", CHUNKINGS)
@torch.inference_mode()
def test_streaming_decode_equals_batch(dev_mimi: MimiModel, sessions, chunks):
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, dev_mimi.cfg.cardinality, (sessions, 16, FRAMES), generator=g)
    state = dev_mimi.init_decoder_state(sessions)
    pcm = torch.cat([dev_mimi.decode_step(c, state)
                     for c in codes.split(_split(FRAMES, chunks), dim=-1)], dim=-1)
    torch.testing.assert_close(pcm, dev_mimi.decode(codes), atol=ATOL, rtol=0)


@torch.inference_mode()
def test_sessions_reset_and_pause_independently(dev_mimi: MimiModel):
    """Session 0 restarts after 5 frames; session 1 runs on; session 2 sits out 3 frames."""
    size = dev_mimi.frame_size
    wav = _signal(3, FRAMES, size, seed=2)
    codes_in = torch.randint(0, dev_mimi.cfg.cardinality, (3, 8, FRAMES))
    enc, dec = dev_mimi.init_encoder_state(3), dev_mimi.init_decoder_state(3)
    codes, pcm = [[] for _ in range(3)], [[] for _ in range(3)]
    for t in range(FRAMES):
        if t == 5:
            restart = torch.tensor([True, False, False])
            enc.reset(restart)
            dec.reset(restart)
            codes[0], pcm[0] = [], []
        active = torch.tensor([True, True, not 3 <= t < 6])
        # Idle session 2 is fed junk, which must leave no trace.
        frame = torch.where(active[:, None, None], wav[..., t * size:(t + 1) * size],
                            torch.randn(3, 1, size))
        out_codes = dev_mimi.encode_step(frame, enc, active)
        out_pcm = dev_mimi.decode_step(codes_in[..., t: t + 1], dec, active)
        for b in active.nonzero()[:, 0].tolist():
            codes[b].append(out_codes[b])
            pcm[b].append(out_pcm[b])
    resumed = torch.cat([wav[2:, :, : 3 * size], wav[2:, :, 6 * size:]], dim=-1)
    expected_wav = [wav[:1, :, 5 * size:], wav[1:2], resumed]
    expected_codes = [codes_in[:1, :, 5:], codes_in[1:2],
                      torch.cat([codes_in[2:, :, :3], codes_in[2:, :, 6:]], dim=-1)]
    for b in range(3):
        assert torch.equal(torch.cat(codes[b], dim=-1), dev_mimi.encode(expected_wav[b])[0])
        torch.testing.assert_close(torch.cat(pcm[b], dim=-1),
                                   dev_mimi.decode(expected_codes[b])[0], atol=ATOL, rtol=0)


def test_whole_codec_is_causal_by_gradient(dev_mimi: MimiModel):
    size, cut = dev_mimi.frame_size, 4
    wav = _signal(1, 8, size, seed=3).requires_grad_(True)
    latent = dev_mimi.encode_to_latent(wav)
    latent[..., :cut].sum().backward()
    assert wav.grad[..., : cut * size].abs().sum() > 0
    assert wav.grad[..., cut * size:].abs().max() == 0

    qlatent = dev_mimi.decode_latent(torch.randint(0, 256, (1, 16, 8))).detach()
    qlatent.requires_grad_(True)
    pcm = dev_mimi.decode_latent_step(qlatent, dev_mimi.init_decoder_state(1, max_frames=8))
    pcm[..., : cut * size].sum().backward()
    assert qlatent.grad[..., :cut].abs().sum() > 0
    assert qlatent.grad[..., cut:].abs().max() == 0


@torch.inference_mode()
def test_batch_encode_pads_the_last_frame(dev_mimi: MimiModel):
    wav = _signal(2, 3, dev_mimi.frame_size)[..., :-700]
    padded = torch.nn.functional.pad(wav, (0, 700))
    assert torch.equal(dev_mimi.encode(wav), dev_mimi.encode(padded))
    assert dev_mimi.encode(wav[..., :0]).shape == (2, dev_mimi.num_codebooks, 0)
    assert dev_mimi.decode(torch.zeros(2, 4, 0, dtype=torch.long)).shape == (2, 1, 0)


@torch.inference_mode()
def test_fewer_codebooks_are_a_prefix(dev_mimi: MimiModel):
    wav = _signal(1, 4, dev_mimi.frame_size)
    all_codes = dev_mimi.encode(wav, num_codebooks=16)
    for k in (1, 2, 8):
        assert torch.equal(dev_mimi.encode(wav, num_codebooks=k), all_codes[:, :k])
    dev_mimi.set_num_codebooks(3)
    try:
        assert dev_mimi.encode(wav).shape[1] == 3
    finally:
        dev_mimi.set_num_codebooks(16)
    with pytest.raises(ValueError, match=r"1\.\.16"):
        dev_mimi.encode(wav, num_codebooks=17)


def test_streaming_rejects_partial_frames(dev_mimi: MimiModel):
    state = dev_mimi.init_encoder_state(1)
    with pytest.raises(ValueError, match="multiple of 1920"):
        dev_mimi.encode_step(torch.zeros(1, 1, 1000), state)


@torch.inference_mode()
def test_snapshot_and_restore_replay_exactly(dev_mimi: MimiModel):
    wav = _signal(2, 6, dev_mimi.frame_size, seed=4)
    frames = wav.split(dev_mimi.frame_size, dim=-1)
    enc, dec = dev_mimi.init_encoder_state(2), dev_mimi.init_decoder_state(2)
    for frame in frames[:3]:
        dev_mimi.decode_step(dev_mimi.encode_step(frame, enc), dec)
    saved_enc, saved_dec = enc.snapshot(), dec.snapshot()
    first = [dev_mimi.decode_step(dev_mimi.encode_step(f, enc), dec) for f in frames[3:]]
    enc.restore(saved_enc)
    dec.restore(saved_dec)
    again = [dev_mimi.decode_step(dev_mimi.encode_step(f, enc), dec) for f in frames[3:]]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
