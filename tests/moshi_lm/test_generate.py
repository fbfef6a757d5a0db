"""The streaming step: teacher-forced equivalence, sliding window past the context, batches
of independent sessions with their own delays, resets and idle steps, forced streams."""

import pytest
import torch

from services.core.constants import UNGENERATED_TOKEN
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from tests.moshi_lm.conftest import tiny_model

MOSHI = (0, 0, 1, 1, 0, 1, 1)
TEXT_LATE = (3, 0, 1, 1, 0, 1, 1)  # ASR-like: text 3 steps behind the audio
AUDIO_LATE = (0, 2, 3, 3, 0, 1, 1)  # TTS-like: generated audio behind the text
SAMPLED = SamplingSettings(text_temperature=1.0, text_top_k=10, audio_temperature=1.2,
                           audio_top_k=8, seed=7)


def user_codes(steps: int, seed: int, model) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.card, (steps, model.cfg.num_input_codebooks), generator=g)


def run_alone(generator, user, settings, delays, **step_kwargs) -> list:
    state = generator.init_state(1, settings, delays)
    return [generator.step(state, user[t][None], return_logits=True, **step_kwargs)
            for t in range(user.shape[0])]


def delayed_inputs(chosen, user, delays, initial) -> torch.Tensor:
    """The input of every step, written independently of the cache: stream k at step s is
    its initial token while s <= delay_k; then the generated token chosen at step s - 1, or
    the user token given at step s - delay_k."""
    steps, gen = chosen.shape
    tokens = torch.empty(steps, len(delays), dtype=torch.long)
    for s in range(steps):
        for k, d in enumerate(delays):
            if s <= d:
                tokens[s, k] = initial[k]
            else:
                tokens[s, k] = chosen[s - 1, k] if k < gen else user[s - d, k - gen]
    return tokens


@pytest.mark.parametrize("delays", [MOSHI, TEXT_LATE, AUDIO_LATE])
def test_teacher_forced_forward_equals_streaming_past_the_context(delays):
    model = tiny_model()
    steps = 3 * model.cfg.context + 5  # the streaming ring wraps; the whole-sequence pass
    user = user_codes(steps, 1, model)  # attends with an explicit sliding-window mask
    results = run_alone(LMGenerator(model), user, SAMPLED, delays)
    chosen = torch.stack([torch.cat([r.text, r.audio[0]]) for r in results])
    tokens = delayed_inputs(chosen, user, delays, model.cfg.initial_tokens)
    with torch.no_grad():
        temporal, audio_logits = model(tokens[None], chosen[None])
    torch.testing.assert_close(temporal.text_logits[0],
                               torch.stack([r.text_logits[0] for r in results]),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(audio_logits[0],
                               torch.stack([r.audio_logits[0] for r in results]),
                               atol=1e-5, rtol=1e-5)


def test_output_frames_are_de_delayed():
    model = tiny_model()
    results = run_alone(LMGenerator(model), user_codes(12, 2, model), SAMPLED, AUDIO_LATE)
    max_delay = max(AUDIO_LATE)
    assert [r.valid.item() for r in results] == [t >= max_delay for t in range(12)]
    for t in range(max_delay, 12):
        frame = results[t].frame[0].tolist()
        # Stream k of the frame of call t was chosen at call t - max_delay + delay_k.
        for k, d in enumerate(AUDIO_LATE[:4]):
            source = results[t - max_delay + d]
            assert frame[k] == (source.text.item() if k == 0 else source.audio[0, k - 1].item())


def test_batch_sessions_equal_sessions_alone():
    """Three sessions with their own delays and seeds in one batch; session 1 restarts at
    step 10 with new settings; session 2 sits out every third step."""
    model = tiny_model()
    generator = LMGenerator(model)
    steps = 24
    user = torch.stack([user_codes(steps, s, model) for s in (10, 11, 12)], dim=1)
    settings = [SAMPLED, SamplingSettings(0.9, 5, 1.0, 4, seed=3), SamplingSettings.greedy()]
    delays = [MOSHI, TEXT_LATE, AUDIO_LATE]
    restart = (SamplingSettings(0.8, 0, 0.9, 0, seed=99), AUDIO_LATE)
    state = generator.init_state(3, max_delay=3)
    for i in range(3):
        generator.start(state, torch.arange(3) == i, settings[i], delays[i])
    batch = [[], [], []]
    for t in range(steps):
        if t == 10:
            generator.start(state, torch.tensor([False, True, False]), *restart)
        active = torch.tensor([True, True, t % 3 != 2])
        result = generator.step(state, user[t], active=active)
        for i in range(3):
            if active[i]:
                batch[i].append((result.text[i].item(), result.audio[i].tolist(),
                                 result.valid[i].item(), result.frame[i].tolist()))
    alone_inputs = [user[:, 0], user[10:, 1], user[[t for t in range(steps) if t % 3 != 2], 2]]
    alone_settings = [(settings[0], delays[0]), restart, (settings[2], delays[2])]
    for i in range(3):
        alone = [(r.text.item(), r.audio[0].tolist(), r.valid.item(), r.frame[0].tolist())
                 for r in run_alone(generator, alone_inputs[i], *alone_settings[i])]
        assert (batch[i][10:] if i == 1 else batch[i]) == alone, f"session {i}"


def test_state_is_preallocated():
    model = tiny_model()
    generator = LMGenerator(model)
    state = generator.init_state(2, SAMPLED)
    buffers = [state.cache, state.transformer.keys, state.transformer.values, state.offset]
    before = [(b.data_ptr(), b.shape) for b in buffers]
    user = user_codes(30, 3, model)
    for t in range(30):
        generator.step(state, torch.stack([user[t], user[t]]))
    assert [(b.data_ptr(), b.shape) for b in buffers] == before
    assert state.offset.tolist() == [30, 30]


def test_forced_generated_streams_are_inputs_at_their_time():
    """ASR with the dialogue layout: the generated audio streams are given (forced) and the
    text is delayed; the frames carry the forced audio, de-delayed."""
    model = tiny_model()
    generator = LMGenerator(model)
    steps, max_delay = 14, max(TEXT_LATE)
    audio = torch.randint(0, model.cfg.card, (steps, model.cfg.dep_q))
    forced = torch.cat([torch.full((steps, 1), UNGENERATED_TOKEN), audio], dim=1)
    state = generator.init_state(1, SAMPLED, TEXT_LATE)
    user = user_codes(steps, 4, model)
    results = [generator.step(state, user[t][None], forced=forced[t][None])
               for t in range(steps)]
    for t in range(max_delay, steps):
        assert results[t].frame[0, 1:].tolist() == audio[t + 1 - max_delay].tolist()


def test_finish_replaces_the_chosen_text():
    """TTS-style: the caller picks the text token after seeing the logits."""
    model = tiny_model()
    generator = LMGenerator(model)
    state = generator.init_state(1, SAMPLED)
    user = user_codes(8, 5, model)
    for t in range(8):
        ctx = generator.begin(state, user[t][None])
        result = generator.finish(state, ctx, torch.tensor([t + 1]))
        assert result.text.item() == t + 1
        if t >= 1:
            assert result.frame[0, 0].item() == t  # chosen at the previous call


def test_same_seed_sessions_sample_independently():
    """Four sampled sessions with one seed and different audio: each equals itself alone."""
    model = tiny_model()
    generator = LMGenerator(model)
    user = torch.stack([user_codes(12, s, model) for s in range(4)], dim=1)
    state = generator.init_state(4, SAMPLED)
    together = [generator.step(state, user[t]) for t in range(12)]
    for i in range(4):
        alone = run_alone(generator, user[:, i], SAMPLED, MOSHI)
        assert [r.frame[i].tolist() for r in together] == [r.frame[0].tolist() for r in alone]
        assert [r.text[i].item() for r in together] == [r.text.item() for r in alone]
