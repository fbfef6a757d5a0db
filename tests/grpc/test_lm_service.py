from functools import partial

import grpc
import numpy as np
import pytest
import torch

from services.core.common_pb2 import CodeFrame, SamplingParams
from services.core.engine import run_session
from services.core.tick import speech_engine
from services.moshi_lm import moshi_lm_pb2, moshi_lm_pb2_grpc
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.mode import GenerationMode
from services.moshi_lm.service import MoshiLMService
from tests.conftest import concurrently

STEPS = 10


@pytest.fixture
def lm_stub(start_server, tiny_lm):
    service = MoshiLMService.create(tiny_lm, "tiny-random", max_sessions=4, idle_timeout=10)
    return moshi_lm_pb2_grpc.MoshiLMStub(start_server([service]).channel)


def user_frames(seed: int, steps: int = STEPS, codebooks: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, (steps, codebooks))


def config(seed=7, text=(0.7, 25), audio=(0.8, 250)):
    return moshi_lm_pb2.GenerateConfig(
        text_sampling=SamplingParams(temperature=text[0], top_k=text[1]),
        audio_sampling=SamplingParams(temperature=audio[0], top_k=audio[1]), seed=seed)


def generate(stub, frames, cfg):
    requests = [moshi_lm_pb2.GenerateRequest(config=cfg)] + [
        moshi_lm_pb2.GenerateRequest(user_frame=CodeFrame(codes=f.tolist())) for f in frames]
    responses = list(stub.Generate(iter(requests)))
    assert [r.frame_index for r in responses] == list(range(len(responses)))
    return np.array([[r.text_token, *r.audio.codes] for r in responses])


def in_process(generator, frames, settings):
    state = generator.init_state(1, settings)
    out = []
    for frame in frames:
        result = generator.step(state, torch.from_numpy(frame)[None])
        if result.valid[0]:
            out.append(result.frame[0].numpy())
    return np.array(out)


def test_info(lm_stub, tiny_lm):
    info = lm_stub.GetInfo(moshi_lm_pb2.GetInfoRequest())
    assert (info.num_input_codebooks, info.num_output_codebooks, info.max_delay) == (8, 8, 1)
    assert list(info.delays) == list(tiny_lm.cfg.delays)


@pytest.mark.parametrize("seed", [7, 123456789012])
def test_tokens_equal_the_in_process_step(lm_stub, tiny_lm, seed):
    frames = user_frames(seed % 1000)
    tokens = generate(lm_stub, frames, config(seed=seed))
    expected = in_process(tiny_lm, frames, SamplingSettings(0.7, 25, 0.8, 250, seed=seed))
    assert tokens.shape == (STEPS - 1, 9)  # nothing for the first step (delay 1)
    np.testing.assert_array_equal(tokens, expected)


def test_four_concurrent_sessions_equal_each_alone(lm_stub):
    inputs = {k: (user_frames(10 + k), config(seed=k)) for k in range(4)}
    alone = {k: generate(lm_stub, *inputs[k]) for k in range(4)}
    together = concurrently({k: partial(generate, lm_stub, *inputs[k]) for k in range(4)})
    for k in range(4):
        np.testing.assert_array_equal(together[k], alone[k])
    assert not np.array_equal(alone[0], alone[1])


@pytest.mark.parametrize(("cfg", "frame", "message"), [
    (config(), [1, 2, 3], "expected 8 codebooks"),
    (config(), [0] * 7 + [4096], "out of range"),
    (config(text=(float("nan"), 25)), None, "text temperature"),
    (config(audio=(-1.0, 25)), None, "audio temperature"),
    (config(audio=(0.8, 5000)), None, "audio top_k"),
    (config(seed=(1 << 64) - 1), None, "seed must be below"),
])
def test_bad_input_is_invalid_argument(lm_stub, cfg, frame, message):
    requests = [moshi_lm_pb2.GenerateRequest(config=cfg)]
    if frame is not None:
        requests.append(moshi_lm_pb2.GenerateRequest(user_frame=CodeFrame(codes=frame)))
    with pytest.raises(grpc.RpcError) as error:
        list(lm_stub.Generate(iter(requests)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    assert len(generate(lm_stub, user_frames(0, 3), config())) == 2


def test_sessions_bring_their_own_delays_to_one_batch(tiny_lm):
    """Moshi's delays and a text-delayed (ASR-like) configuration in one engine batch."""
    text_late = (2, *tiny_lm.cfg.delays[1:])
    engine = speech_engine(2, tiny_lm, max_delay=2)
    try:
        streams = [GenerationMode(SamplingSettings(seed=1)),
                   GenerationMode(SamplingSettings(seed=2), delays=text_late)]
        frames = [user_frames(30), user_frames(31)]
        outputs = concurrently({k: partial(run_session, engine.open(streams[k]), frames[k])
                                for k in range(2)})
    finally:
        engine.stop()
    for k, stream in enumerate(streams):
        state = tiny_lm.init_state(1, stream.sampling, stream.delays, max_delay=2)
        alone = [tiny_lm.step(state, torch.from_numpy(f)[None]) for f in frames[k]]
        expected = [r.frame[0].numpy() for r in alone if r.valid[0]]
        got = [np.concatenate([[o.text_token], o.audio]) for o in outputs[k] if o is not None]
        assert len(got) == STEPS - (1 if k == 0 else 2)
        np.testing.assert_array_equal(got, expected)
