"""TTS on a plain Moshi-architecture LM, served from the LM's own engine while a dialogue runs
on it: the audio equals that of the same session run alone on the LM."""

import threading

import numpy as np
import pytest

from services.builtin import BuiltinTokenizer
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.moshi_lm.generate import SamplingSettings
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.mode import SynthesisMode
from services.tts.service import TTSService
from tests.conftest import run_alone, tiny_moshi_server

DELAY = 4
TEXT = "Hello there, general Kenobi."


@pytest.fixture(scope="module")
def setup():
    def tts(engine, cfg):
        return TTSService.on_moshi(engine, cfg, BuiltinTokenizer(), "tiny", DELAY)

    with tiny_moshi_server(tts) as stack:
        yield stack


def alone(generator, mimi) -> np.ndarray:
    """The same synthesis alone on a fresh engine of the same models."""
    mode = SynthesisMode.for_moshi(generator.cfg, BuiltinTokenizer(), DELAY,
                                   SamplingSettings(0.8, 25, 0.8, 250, seed=7))
    chunks = run_alone(mode, [TEXT], generator, mimi, max_delay=8)
    return np.concatenate([c.audio for c in chunks if c is not None])


def test_tts_next_to_a_dialogue_on_one_lm(setup):
    channel, generator, mimi, _ = setup
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
    np.testing.assert_allclose(audio, alone(generator, mimi), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.concatenate([np.frombuffer(c.audio, "<f4") for c in streamed]),
                               audio, atol=1e-5, rtol=0)
    assert [w.text for w in response.words] == TEXT.split() and replies
    info = stub.GetInfo(tts_pb2.GetInfoRequest())
    assert not info.voice_conditioning and info.audio_delay_seconds == pytest.approx(0.32)
