"""The voice cache (issue 14, item 6) on a real server with the golden tts_dev model: one
loaded copy per voice file however its name is spelled, bounded, never a rejected voice, and
errors that name the voice, not the server's paths."""

import json
import shutil

import grpc
import pytest
import torch
from safetensors.torch import save_file

from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.limits import RequestLimits
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

CACHE_SIZE = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(stub, TTSService, voices folder): voices dev/voice, a.., b.. (copies of the golden
    voice), short (a wrong shape) and broken (not safetensors)."""
    voices = tmp_path_factory.mktemp("voices")
    (voices / "dev").mkdir()
    for name in ("dev/voice", "a", "b", "c"):
        shutil.copy(FIXTURES / "tts_dev_voice.safetensors", voices / f"{name}.safetensors")
    save_file({"speaker_wavs": torch.zeros(1, 32, 7)}, str(voices / "short.safetensors"))
    (voices / "broken.safetensors").write_bytes(b"\xff" * 64)
    config = LMConfig.from_dict(json.loads((FIXTURES / "tts_dev.json").read_text())
                                ["kyutai_config"])
    bundle = load_tts(FIXTURES / "tts_dev.safetensors", config=config)
    codec = load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)
    engine = speech_engine(2, LMGenerator(bundle.model), codec, voice_length=10)
    mimi = MimiService(codec, engine)
    tts = TTSService.on_tts(engine, bundle.model, bundle.tokenizer, bundle.name, 10,
                            voices_dir=voices,
                            limits=RequestLimits(voice_cache_size=CACHE_SIZE))
    grpc_server, port = create_server([mimi, tts], "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield tts_pb2_grpc.SpeechSynthesisStub(channel), tts, voices
    channel.close()
    grpc_server.stop(None)
    close_all([mimi, tts])


def synthesize(stub, voice: str) -> tts_pb2.SynthesizeResponse:
    return stub.Synthesize(tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesisConfig(encoding=PCM_F32LE, voice=voice), text="Hi."),
        timeout=60)


def refused(stub, voice: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        synthesize(stub, voice)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


def test_every_spelling_of_one_voice_file_loads_it_once(server):
    stub, tts, _ = server
    loads = tts.voices.loads
    spellings = ["dev/voice", "./dev/voice", "dev/./voice.safetensors", "dev//voice",
                 "./" * 40 + "dev/voice", "dev/../dev/voice"]
    audio = {synthesize(stub, name).audio for name in spellings}
    assert len(audio) == 1  # the same voice every time
    assert tts.voices.loads == loads + 1


def test_the_cache_is_bounded_least_recently_used_first(server):
    stub, tts, _ = server
    for name in ("a", "b", "c", "a"):
        synthesize(stub, name)
    assert len(tts.voices) == CACHE_SIZE
    loads = tts.voices.loads
    synthesize(stub, "a")  # the most recent: still loaded
    assert tts.voices.loads == loads
    synthesize(stub, "b")  # dropped when c came
    assert tts.voices.loads == loads + 1


def test_a_rejected_voice_is_never_kept(server):
    stub, tts, _ = server
    kept, loads = len(tts.voices), tts.voices.loads
    for _ in range(3):
        assert "shape" in refused(stub, "short")
    assert tts.voices.loads == loads + 3  # read (and refused) each time, never cached
    assert len(tts.voices) == kept


@pytest.mark.parametrize("name", ["x" * 300, "dev/" + "y" * 250, "broken", "missing",
                                  "../voices/dev/voice", "/etc/passwd", "dev/voice\0"])
def test_bad_voice_names_are_invalid_argument_without_server_paths(server, name):
    stub, _, voices = server
    message = refused(stub, name)
    assert str(voices) not in message and str(voices.resolve()) not in message
    assert "voice" in message
