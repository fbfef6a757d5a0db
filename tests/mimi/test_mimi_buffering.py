import numpy as np
import pytest
import torch

from tests.mimi.buffering import StreamingEncoder


@torch.inference_mode()
def test_chunks_of_any_size_give_the_batch_codes(dev_mimi):
    size = dev_mimi.frame_size
    rng = np.random.default_rng(0)
    audio = [0.3 * rng.standard_normal(n * size).astype(np.float32) for n in (6, 4, 5)]
    encoder = StreamingEncoder(dev_mimi, batch_size=3, num_codebooks=8, capacity_frames=1)
    got = [[] for _ in range(3)]
    cursors = [0, 0, 0]
    while any(c < len(a) for c, a in zip(cursors, audio, strict=True)):
        for b in range(3):  # every session pushes its own irregular chunk sizes
            n = int(rng.integers(1, 5000))
            encoder.push(b, audio[b][cursors[b]: cursors[b] + n])
            cursors[b] += n
        for b, codes in enumerate(encoder.encode_available()):
            got[b].append(codes)
    for b in range(3):
        expected = dev_mimi.encode(torch.from_numpy(audio[b])[None, None], num_codebooks=8)[0]
        assert torch.equal(torch.cat(got[b], dim=-1), expected)
    assert encoder.pending().tolist() == [0, 0, 0]


@torch.inference_mode()
def test_step_only_advances_ready_sessions_and_reset_restarts_one(dev_mimi):
    size = dev_mimi.frame_size
    wav = 0.3 * torch.randn(2, 3 * size)
    encoder = StreamingEncoder(dev_mimi, batch_size=2, num_codebooks=4)
    encoder.push(0, wav[0, :size])
    encoder.push(1, wav[1, : size // 2])
    codes, active = encoder.step()
    assert active.tolist() == [True, False] and codes.shape == (2, 4, 1)
    assert encoder.pending().tolist() == [0, size // 2]
    encoder.push(0, wav[0, size:])
    encoder.reset(torch.tensor([False, True]))  # session 1 drops its half frame, restarts
    encoder.push(1, wav[1])
    rest = encoder.encode_available()
    assert torch.equal(torch.cat([codes[0], rest[0]], dim=-1),
                       dev_mimi.encode(wav[:1, None], num_codebooks=4)[0])
    assert torch.equal(rest[1], dev_mimi.encode(wav[1:, None], num_codebooks=4)[0])


@torch.inference_mode()
def test_pad_to_frame_flushes_the_tail(dev_mimi):
    encoder = StreamingEncoder(dev_mimi, batch_size=1)
    encoder.push(0, np.ones(2500, dtype=np.float32) * 0.1)
    assert encoder.pad_to_frame(0) == 2 * dev_mimi.frame_size - 2500
    codes = encoder.encode_available()[0]
    assert torch.equal(codes, dev_mimi.encode(torch.full((1, 1, 2500), 0.1))[0])


def test_bad_codebook_count(dev_mimi):
    with pytest.raises(ValueError, match=r"1\.\.16"):
        StreamingEncoder(dev_mimi, batch_size=1, num_codebooks=40)
