"""TTS on a plain Moshi-architecture LM, served from the LM's own engine while a dialogue runs
on it: the audio equals that of the same session run alone on the LM."""

import threading

import numpy as np
import pytest
import torch

from services.builtin import BuiltinTokenizer
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.stepper import LMStepper
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.delayed_audio import DelayedAudioTTS
from services.tts.service import TTSService
from tests.conftest import tiny_moshi_server

DELAY = 4
TEXT = "Hello there, general Kenobi."


@pytest.fixture(scope="module")
def setup():
    def tts(engine, cfg, codec, silence):
        return TTSService.on_lm_engine(engine, cfg, BuiltinTokenizer(), codec, "tiny", DELAY,
                                       silence)

    with tiny_moshi_server(tts) as stack:
        yield stack


def alone(generator, mimi, silence) -> np.ndarray:
    mode = DelayedAudioTTS(generator.cfg, DELAY, silence)
    stepper = LMStepper(generator, 1, max_delay=8)
    stepper.start([0], [mode.stream(SamplingSettings(0.8, 25, 0.8, 250, seed=7))])
    frames = [stepper.step([0], [x])[0] for x in mode.inputs(
        mode.text_tokens([TEXT], BuiltinTokenizer()))]
    codes = np.stack([f.audio for f in frames if f is not None], axis=1)
    with torch.no_grad():
        return mimi.decode(torch.from_numpy(codes)[None])[0, 0].clamp(-1, 1).numpy()


def test_tts_next_to_a_dialogue_on_one_lm(setup):
    channel, generator, mimi, silence = setup
    replies = []

    def talk():
        config = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE,
                                             input_sample_rate_hertz=24000,
                                             output_encoding=PCM_F32LE, seed=3)
        noise = (0.1 * np.random.default_rng(2).standard_normal(24000)).astype(np.float32)
        requests = [dialogue_pb2.ConverseRequest(config=config)] + [
            dialogue_pb2.ConverseRequest(audio=c.tobytes()) for c in np.split(noise, 10)]
        replies.extend(dialogue_pb2_grpc.DialogueStub(channel).Converse(iter(requests)))

    talker = threading.Thread(target=talk)
    talker.start()
    stub = tts_pb2_grpc.SpeechSynthesisStub(channel)
    sampling = dict(text_sampling=SamplingParams(temperature=0.8, top_k=25),
                    audio_sampling=SamplingParams(temperature=0.8, top_k=250))
    config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, seed=7, **sampling)
    response = stub.Synthesize(tts_pb2.SynthesizeRequest(config=config, text=TEXT))

    def pieces():
        yield tts_pb2.StreamingSynthesizeRequest(config=config)
        for piece in ("Hel", "lo there, gen", "eral Kenobi."):
            yield tts_pb2.StreamingSynthesizeRequest(text=piece)
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    streamed = list(stub.StreamingSynthesize(pieces()))
    talker.join()
    audio = np.frombuffer(response.audio, dtype="<f4")
    np.testing.assert_allclose(audio, alone(generator, mimi, silence), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.concatenate([np.frombuffer(c.audio, "<f4") for c in streamed]),
                               audio, atol=1e-5, rtol=0)
    assert [w.text for w in response.words] == TEXT.split() and replies
    info = stub.GetInfo(tts_pb2.GetInfoRequest())
    assert not info.voice_conditioning and info.audio_delay_seconds == pytest.approx(0.32)
