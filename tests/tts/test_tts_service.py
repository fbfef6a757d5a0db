"""The TTS service on a real server (port 0) with the golden tts_dev model and mimi_dev."""

import json
import shutil
import threading

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from services.core.common_pb2 import PCM_F32LE, PCM_S16LE, SamplingParams
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.tick import speech_engine
from services.mimi.loading import load_mimi
from services.mimi.service import MimiService
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import LMGenerator
from services.tts import tts_pb2, tts_pb2_grpc
from services.tts.loading import load_tts
from services.tts.service import TTSService
from services.wiring import close_all
from tests.conftest import FIXTURES

GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")
META = json.loads(str(GOLDEN["meta"]))
TEXT0 = META["scripts"]["script0"]["text"]
GREEDY = dict(encoding=PCM_F32LE, voice="dev/voice", text_sampling=SamplingParams(temperature=0),
              audio_sampling=SamplingParams(temperature=0), cfg_coef=2.0)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    voices = tmp_path_factory.mktemp("voices")
    (voices / "dev").mkdir()
    shutil.copy(FIXTURES / "tts_dev_voice.safetensors", voices / "dev" / "voice.safetensors")
    save_file({"speaker_wavs": torch.zeros(1, 32, 7)}, str(voices / "short.safetensors"))
    config = LMConfig.from_dict(json.loads((FIXTURES / "tts_dev.json").read_text())
                                ["kyutai_config"])
    bundle = load_tts(FIXTURES / "tts_dev.safetensors", config=config)
    codec = load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)
    engine = speech_engine(3, LMGenerator(bundle.model), codec, voice_length=10)
    mimi = MimiService(codec, engine)
    tts = TTSService.on_tts(engine, bundle.model, bundle.tokenizer, bundle.name, 10,
                            voices_dir=voices)
    server, port = create_server([mimi, tts], "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield tts_pb2_grpc.SpeechSynthesisStub(channel)
    channel.close()
    server.stop(None)
    close_all([mimi, tts])


def f32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def test_synthesize_matches_golden_audio_and_words(stub):
    response = stub.Synthesize(tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesisConfig(**GREEDY), text=TEXT0))
    np.testing.assert_allclose(f32(response.audio), GOLDEN["s0_pcm"], atol=1e-4, rtol=0)
    transcript = META["scripts"]["script0"]["transcript"]
    assert [w.text for w in response.words] == [w for w, _ in transcript]
    assert [round(w.start_seconds * 12.5) for w in response.words] == \
        [s - 2 for _, s in transcript]
    assert response.audio_seconds == pytest.approx(len(GOLDEN["s0_pcm"]) / 24000)


def test_streamed_text_gives_the_same_audio(stub):
    pieces = ["Hel", "lo wor", "ld, this", " is a t", "est."]

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(**GREEDY))
        for piece in pieces:
            yield tts_pb2.StreamingSynthesizeRequest(text=piece)
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    chunks = list(stub.StreamingSynthesize(requests()))
    audio = np.concatenate([f32(c.audio) for c in chunks])
    np.testing.assert_allclose(audio, GOLDEN["s0_pcm"], atol=1e-4, rtol=0)
    online = list(stub.SynthesizeOnline(tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesisConfig(**GREEDY), text=TEXT0)))
    assert len(online) > 10
    np.testing.assert_allclose(np.concatenate([f32(c.audio) for c in online]), audio, atol=1e-6)
    assert [w.text for c in online for w in c.words] == [w.text for c in chunks for w in c.words]


def test_slow_text_is_signalled_and_changes_nothing(stub):
    waiting = threading.Event()

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(**GREEDY))
        yield tts_pb2.StreamingSynthesizeRequest(text="Hello world, ")
        assert waiting.wait(30)  # the model runs out of text
        yield tts_pb2.StreamingSynthesizeRequest(text=TEXT0[len("Hello world, "):])
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())

    chunks = []
    for chunk in stub.StreamingSynthesize(requests()):
        chunks.append(chunk)
        if chunk.waiting_for_text:
            waiting.set()
    assert sum(c.waiting_for_text for c in chunks) == 1
    audio = np.concatenate([f32(c.audio) for c in chunks])
    np.testing.assert_allclose(audio, GOLDEN["s0_pcm"], atol=1e-4, rtol=0)


def test_bad_inputs_get_clear_statuses_and_the_server_goes_on(stub):
    def status(call):
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code(), info.value.details()

    config = tts_pb2.SynthesisConfig(**GREEDY)
    code, details = status(lambda: stub.Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text="  ")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in details
    bad_voice = tts_pb2.SynthesisConfig(**{**GREEDY, "voice": "../nope"})
    code, details = status(lambda: stub.Synthesize(
        tts_pb2.SynthesizeRequest(config=bad_voice, text="hi")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown voice" in details
    short = tts_pb2.SynthesisConfig(**{**GREEDY, "voice": "short"})
    code, details = status(lambda: stub.Synthesize(
        tts_pb2.SynthesizeRequest(config=short, text="hi")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shape" in details
    bad_cfg = tts_pb2.SynthesisConfig(**{**GREEDY, "cfg_coef": 2.2})
    code, details = status(lambda: stub.Synthesize(
        tts_pb2.SynthesizeRequest(config=bad_cfg, text="hi")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cfg_coef" in details

    def late_text():
        yield tts_pb2.StreamingSynthesizeRequest(config=config)
        yield tts_pb2.StreamingSynthesizeRequest(text="hi there")
        yield tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())
        yield tts_pb2.StreamingSynthesizeRequest(text="more")

    code, details = status(lambda: list(stub.StreamingSynthesize(late_text())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "end of input" in details
    code, details = status(lambda: list(stub.StreamingSynthesize(iter(
        [tts_pb2.StreamingSynthesizeRequest(text="no config")]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "config" in details
    s16 = tts_pb2.SynthesisConfig(**{**GREEDY, "encoding": PCM_S16LE})
    response = stub.Synthesize(tts_pb2.SynthesizeRequest(config=s16, text=TEXT0))
    pcm = np.frombuffer(response.audio, dtype="<i2") / 32768
    np.testing.assert_allclose(pcm, GOLDEN["s0_pcm"], atol=1 / 16384)


def test_output_resampled_on_request(stub):
    config = tts_pb2.SynthesisConfig(**{**GREEDY, "sample_rate_hertz": 16000})
    chunks = list(stub.SynthesizeOnline(tts_pb2.SynthesizeRequest(config=config, text=TEXT0)))
    audio = np.concatenate([f32(c.audio) for c in chunks])
    assert abs(len(audio) - len(GOLDEN["s0_pcm"]) * 2 // 3) <= 2
    assert chunks[-1].audio_seconds == pytest.approx(len(GOLDEN["s0_pcm"]) / 24000)


def test_info_and_voices(stub):
    info = stub.GetInfo(tts_pb2.GetInfoRequest())
    assert info.max_codebooks == 16 and info.voice_conditioning
    assert info.audio_delay_seconds == pytest.approx(0.24)
    assert stub.ListVoices(tts_pb2.ListVoicesRequest()).voices == [
        "dev/voice.safetensors", "short.safetensors"]
