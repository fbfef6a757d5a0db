import dataclasses
from functools import partial

import grpc
import numpy as np
import pytest
import torch

from services.core.common_pb2 import PCM_F32LE, PCM_S16LE, SamplingParams
from services.core.grpc_server import create_channel, create_server
from services.core.pcm import encode_pcm
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.service import DialogueService
from services.mimi.client import RemoteMimi
from services.mimi.service import MimiService
from services.moshi_lm.client import RemoteLM
from services.moshi_lm.config import preset
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import prepare_for_inference
from services.moshi_lm.model import LMModel
from services.moshi_lm.service import MoshiLMService
from tests.conftest import concurrently

RATE = 16_000  # the user's audio is resampled to 24 kHz by the dialogue


def services(tiny_mimi, tiny_lm):
    mimi = MimiService.create(tiny_mimi, max_sessions=8, idle_timeout=10)
    lm = MoshiLMService.create(tiny_lm, "tiny-random", max_sessions=4, idle_timeout=10)
    return mimi, lm


@pytest.fixture
def one_process(start_server, tiny_mimi, tiny_lm):
    mimi, lm = services(tiny_mimi, tiny_lm)
    channel = start_server([mimi, lm, DialogueService(mimi, lm)]).channel
    return dialogue_pb2_grpc.DialogueStub(channel)


@pytest.fixture
def separate(start_server, tiny_mimi, tiny_lm):
    mimi, lm = services(tiny_mimi, tiny_lm)
    mimi_channel, lm_channel = start_server([mimi]).channel, start_server([lm]).channel
    dialogue = DialogueService(RemoteMimi(mimi_channel), RemoteLM(lm_channel))
    return dialogue_pb2_grpc.DialogueStub(start_server([dialogue]).channel)


def voice(seed: int, seconds: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def config(seed: int) -> dialogue_pb2.DialogueConfig:
    return dialogue_pb2.DialogueConfig(
        input_encoding=PCM_S16LE, input_sample_rate_hertz=RATE, output_encoding=PCM_F32LE,
        text_sampling=SamplingParams(temperature=0.7, top_k=25),
        audio_sampling=SamplingParams(temperature=0.8, top_k=250), seed=seed)


def converse(stub, audio: np.ndarray, seed: int, chunk: int = 1000):
    data = encode_pcm(audio, PCM_S16LE)
    requests = [dialogue_pb2.ConverseRequest(config=config(seed))] + [
        dialogue_pb2.ConverseRequest(audio=data[i: i + chunk])
        for i in range(0, len(data), chunk)]
    responses = list(stub.Converse(iter(requests)))
    assert [r.frame_index for r in responses] == list(range(len(responses)))
    audio = np.concatenate([np.frombuffer(r.audio, "<f4") for r in responses])
    return np.array([r.text_token for r in responses]), audio


def direct(tiny_mimi, tiny_lm, audio: np.ndarray, seed: int):
    """The same dialogue with the models called directly, one session, no engine."""
    from services.core.audio import StreamResampler

    resampler = StreamResampler(RATE)
    pcm = np.concatenate([resampler.process(audio), resampler.flush()])
    frames = -(-len(pcm) // 1920)
    pcm = np.pad(pcm, (0, frames * 1920 - len(pcm)))
    encoder, decoder = tiny_mimi.init_encoder_state(1), tiny_mimi.init_decoder_state(1)
    state = tiny_lm.init_state(1, SamplingSettings(0.7, 25, 0.8, 250, seed=seed))
    texts, out = [], []
    with torch.inference_mode():
        for frame in torch.from_numpy(pcm).view(-1, 1920):
            codes = tiny_mimi.encode_step(frame[None, None], encoder, num_codebooks=8)
            result = tiny_lm.step(state, codes[:, :, 0])
            if result.valid[0]:
                texts.append(int(result.frame[0, 0]))
                out.append(tiny_mimi.decode_step(result.frame[:, 1:, None], decoder)[0, 0])
    return np.array(texts), torch.cat(out).numpy()


def test_one_process_equals_the_models_called_directly(one_process, tiny_mimi, tiny_lm):
    audio = voice(1)
    text, reply = converse(one_process, audio, seed=11)
    expected_text, expected_reply = direct(tiny_mimi, tiny_lm, audio, seed=11)
    assert len(text) == 8  # 0.7 s -> 9 frames of 80 ms (the last padded), minus 1 of delay
    np.testing.assert_array_equal(text, expected_text)
    np.testing.assert_allclose(reply, expected_reply, atol=1e-5)


def test_separate_servers_equal_one_process(one_process, separate):
    audio = voice(2)
    text, reply = converse(one_process, audio, seed=5)
    remote_text, remote_reply = converse(separate, audio, seed=5, chunk=3000)
    np.testing.assert_array_equal(remote_text, text)
    np.testing.assert_allclose(remote_reply, reply, atol=1e-5)


def test_four_concurrent_dialogues_equal_each_alone(one_process):
    inputs = {k: (voice(20 + k, 0.5 + 0.1 * k), k) for k in range(4)}
    alone = {k: converse(one_process, *inputs[k]) for k in range(4)}
    together = concurrently({k: partial(converse, one_process, *inputs[k], chunk=640 + 2 * k)
                             for k in range(4)})
    for k in range(4):
        np.testing.assert_array_equal(together[k][0], alone[k][0])
        np.testing.assert_allclose(together[k][1], alone[k][1], atol=1e-5)


def test_audio_before_config_and_info(one_process):
    with pytest.raises(grpc.RpcError) as error:
        list(one_process.Converse(iter([dialogue_pb2.ConverseRequest(audio=b"\0\0")])))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = one_process.GetInfo(dialogue_pb2.GetInfoRequest())
    assert (info.frame_size, info.model_delay_frames, info.mimi) == (1920, 1, "in-process")


def test_an_lm_that_cannot_speak_is_unimplemented(start_server, tiny_mimi):
    listener = dataclasses.replace(preset("tiny"), n_q=8, dep_q=0, delays=(0,) * 9)
    with torch.random.fork_rng(devices=[]):
        model = prepare_for_inference(LMModel(listener))
    mimi = MimiService.create(tiny_mimi, max_sessions=2)
    lm = MoshiLMService.create(LMGenerator(model), "listener", max_sessions=1)
    stub = dialogue_pb2_grpc.DialogueStub(
        start_server([mimi, lm, DialogueService(mimi, lm)]).channel)
    with pytest.raises(grpc.RpcError) as error:
        converse(stub, voice(0, 0.2), seed=0)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "cannot hold a dialogue" in error.value.details()


def test_an_unreachable_lm_is_unavailable(tiny_mimi):
    mimi = MimiService.create(tiny_mimi, max_sessions=1)
    dialogue = DialogueService(mimi, RemoteLM(create_channel("127.0.0.1:1")))
    server, port = create_server([mimi, dialogue], "127.0.0.1:0", warm_up=False)
    try:
        with create_channel(f"127.0.0.1:{port}") as channel, \
                pytest.raises(grpc.RpcError) as error:
            converse(dialogue_pb2_grpc.DialogueStub(channel), voice(0, 0.2), seed=0)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)
        mimi.close()
