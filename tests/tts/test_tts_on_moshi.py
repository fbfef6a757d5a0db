"""TTS on a plain Moshi-architecture LM, served from the LM's own engine while a dialogue runs
on it: the audio equals that of the same session run alone on the LM."""

import threading

import numpy as np
import pytest
import torch

from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.core.engine import run_session
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.service import DialogueService
from services.mimi.loading import build_random_mimi
from services.mimi.service import MimiService
from services.moshi_lm.config import preset
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import prepare_for_inference
from services.moshi_lm.model import LMModel
from services.moshi_lm.service import MoshiLMService
from services.moshi_lm.stepper import LMStepper, lm_engine
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.delayed_audio import DelayedAudioTTS
from services.tts.loading import ByteTokenizer
from services.tts.service import TTSService

DELAY = 4
TEXT = "Hello there, general Kenobi."


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    generator = LMGenerator(prepare_for_inference(LMModel(preset("tiny"))))
    mimi = build_random_mimi(seed=0, num_codebooks=8)
    codec = MimiService.create(mimi, 6)
    lm = MoshiLMService(generator, lm_engine(generator, 3, max_delay=8), "tiny")
    silence = run_session(codec.open_encoder(8), [np.zeros(1920, np.float32)])[0]
    tts = TTSService.on_lm_engine(lm.engine, generator.cfg, ByteTokenizer(), codec, "tiny",
                                  DELAY, silence)
    services = [codec, lm, DialogueService(codec, lm), tts]
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield channel, generator, mimi, silence
    channel.close()
    server.stop(None)
    for service in services:
        service.close()


def alone(generator, mimi, silence) -> np.ndarray:
    mode = DelayedAudioTTS(generator.cfg, DELAY, silence)
    stepper = LMStepper(generator, 1, max_delay=8)
    stepper.start([0], [mode.stream(SamplingSettings(0.8, 25, 0.8, 250, seed=7))])
    frames = [stepper.step([0], [x])[0] for x in mode.inputs(
        mode.text_tokens([TEXT], ByteTokenizer()))]
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
