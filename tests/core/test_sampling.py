import pytest
import torch

from services.core.sampling import (
    GeneratorNoise,
    HashedNoise,
    SamplingParams,
    hash32,
    sample,
    seed_keys,
    session_keys,
    step_keys,
)


def keyed(seeds, step=0, stream=0) -> HashedNoise:
    seeds = torch.as_tensor(seeds)
    return HashedNoise(session_keys(seeds, torch.full_like(seeds, step), stream))


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 50)
    params = SamplingParams.create(5, temperature=0.0, top_k=3)
    assert torch.equal(sample(logits, params, keyed(range(5))), logits.argmax(-1))


def test_top_k_keeps_only_the_best_tokens():
    logits = torch.randn(1, 100).expand(400, -1)
    params = SamplingParams.create(400, temperature=5.0, top_k=4)
    tokens = sample(logits, params, keyed(range(400)))
    assert set(tokens.tolist()) == set(logits[0].topk(4).indices.tolist())


def test_draws_follow_the_softmax():
    """Exponential race == categorical draw from softmax(logits / T)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, -1)
    params = SamplingParams.create(20000, temperature=0.7, top_k=0)
    tokens = sample(logits, params, keyed(range(20000), step=3))
    freq = torch.bincount(tokens, minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.softmax(logits[0] / 0.7, -1), atol=0.015, rtol=0)


def test_rows_do_not_depend_on_their_batch():
    """A session draws the same token alone or among others, whatever its row."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 30, generator=g)
    params = SamplingParams.create(6)
    params.set(None, torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0, 1.0]),
               torch.tensor([0, 5, 10, 3, 30, 0]))
    seeds = torch.tensor([11, 12, 13, 14, 15, 16])
    together = sample(logits, params, keyed(seeds, step=9))
    for i in range(6):
        alone = SamplingParams.create(1, params.temperature[i].item(), params.top_k[i].item())
        row = sample(logits[i:i + 1], alone, keyed(seeds[i:i + 1], step=9))
        assert row.item() == together[i].item()
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    shuffled = SamplingParams.create(6)
    shuffled.set(None, params.temperature[order], params.top_k[order])
    assert torch.equal(sample(logits[order], shuffled, keyed(seeds[order], step=9)),
                       together[order])


def test_host_summaries():
    params = SamplingParams.create(3, temperature=0.0)
    assert not params.any_random
    params.set(torch.tensor([True, False, False]), 1.0, 25)
    assert (params.any_random, params.any_top_k, params.max_top_k) == (True, True, 25)
    params.set(torch.tensor([False, True, False]), 1.0, 0)
    assert (params.any_top_k, params.max_top_k) == (True, 0)  # one row: whole vocabulary


def test_noise_sources():
    indices = torch.arange(1000)[None]
    hashed = keyed([5])(indices)
    assert torch.equal(hashed, keyed([5])(indices))
    assert not torch.equal(hashed, keyed([5], step=1)(indices))
    assert not torch.equal(hashed, keyed([5], stream=1)(indices))
    assert hashed.mean().item() == pytest.approx(1.0, abs=0.1)  # Exp(1)
    a = GeneratorNoise(torch.Generator().manual_seed(3))(indices)
    b = GeneratorNoise(torch.Generator().manual_seed(3))(indices)
    assert torch.equal(a, b) and a.min() > 0


def test_hash_stays_in_32_bits():
    x = torch.tensor([0, 1, 2**32 - 1, 123456789])
    h = hash32(x)
    assert h.min() >= 0 and h.max() < 2**32 and len(set(h.tolist())) == 4


def test_precomputed_hashes_draw_the_same_noise():
    """The cached per-index hashes and per-session seed keys are a faster route to the same
    keys and draws, bit for bit."""
    seeds = torch.tensor([0, 7, 2**40 + 3, 2**62])
    steps = torch.tensor([0, 5, 123456, 9])
    streams = torch.arange(17)
    assert torch.equal(step_keys(seed_keys(seeds), steps, 17),
                       session_keys(seeds[:, None], steps[:, None], streams))
    noise = keyed(seeds, step=3)
    indices = torch.randint(0, 2048, (4, 250))
    assert torch.equal(noise(indices, 2048), noise(indices))
