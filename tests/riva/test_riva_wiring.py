"""`serve`'s wiring of the Riva services: on by default over asr / tts, off without "riva",
an error alone."""

import base64
import json
import shutil

import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from cli.main import main
from services.core.common_pb2 import PCM_S16LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import (
    RIVA_SERVICE_NAMES,
    ModelOptions,
    OptionsError,
    build_services,
    close_all,
)
from tests.conftest import FIXTURES
from tests.riva.conftest import run_riva

OPTIONS = ModelOptions(max_sessions=1, asr_text_delay=2, tts_audio_delay=2)


def test_riva_adapts_the_asr_and_tts_served_with_it():
    services = build_services(["asr", "riva"], OPTIONS)
    try:
        by_name = {s.name: s for s in services}
        riva = by_name[RIVA_SERVICE_NAMES["asr"]]
        assert riva.asr is by_name["services.asr.SpeechRecognition"]  # no second engine
        assert riva.engines() == riva.asr.engines()
        assert RIVA_SERVICE_NAMES["tts"] not in by_name
    finally:
        close_all(services)
    services = build_services(["asr", "tts"], OPTIONS)
    try:
        assert not set(RIVA_SERVICE_NAMES.values()) & {s.name for s in services}
    finally:
        close_all(services)


def test_riva_alone_is_a_usage_error():
    with pytest.raises(OptionsError, match="add asr and / or tts"):
        build_services(["riva"], OPTIONS)
    result = CliRunner().invoke(main, ["serve", "--services", "riva", "--port", "0"])
    assert result.exit_code == 2 and "add asr and / or tts" in result.output


def test_a_tts_checkpoint_serves_riva_tts_with_its_voices(riva_python, tmp_path):
    """A Kyutai TTS checkpoint's voices, listed and chosen through the real Riva client; a
    name that is not one of them gets the default (the first voice)."""
    folder = tmp_path / "tts"  # as Kyutai ships it: config.json and the files it names
    folder.mkdir()
    config = json.loads((FIXTURES / "tts_dev.json").read_text())
    (folder / "config.json").write_text(json.dumps(config.get("kyutai_config")
                                                   or config["config"]))
    for name in ("tts_dev.safetensors", "tts_dev_tokenizer.model", "mimi_dev.safetensors",
                 "mimi_dev.json"):
        shutil.copy(FIXTURES / name, folder / name)
    voice = load_file(FIXTURES / "tts_dev_voice.safetensors")["speaker_wavs"]
    for name, scale in (("a", 1.0), ("b", -2.0)):  # two different voices
        (tmp_path / "voices" / name).mkdir(parents=True)
        save_file({"speaker_wavs": voice * scale},
                  tmp_path / "voices" / name / "voice.safetensors")
    services = build_services(None, ModelOptions(lm_checkpoint=str(folder), max_sessions=2,
                                                 voices_dir=str(tmp_path / "voices")))
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        assert [s.name for s in services][-1] == RIVA_SERVICE_NAMES["tts"]
        listed, named, unknown = run_riva(riva_python, f"127.0.0.1:{port}", [
            {"call": "tts_config"},
            {"call": "synthesize", "text": "Hi there.", "voice": "moshi-services.b/voice"
             ".safetensors", "sample_rate": 24000},
            {"call": "synthesize", "text": "Hi there.", "voice": "English-US.Female-1",
             "sample_rate": 24000}])
        assert [v["voice"] for v in listed["responses"][1]["voices"]] == [
            "moshi-services.default", "moshi-services.a/voice.safetensors",
            "moshi-services.b/voice.safetensors"]
        stub = tts_pb2_grpc.SpeechSynthesisStub(channel)

        def ours(voice):
            config = tts_pb2.SynthesisConfig(voice=voice, encoding=PCM_S16LE)
            return stub.Synthesize(tts_pb2.SynthesizeRequest(config=config, text="Hi there."))

        audio = [base64.b64decode(r["responses"][0]["audio"]) for r in (named, unknown)]
        assert audio[0] == ours("b/voice.safetensors").audio
        assert audio[1] == ours("").audio == ours("a/voice.safetensors").audio != audio[0]
    finally:
        channel.close()
        server.stop(None)
        close_all(services)


def test_serve_help_names_riva():
    output = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "riva" in output and "nvidia.riva.asr.RivaSpeechRecognition" in output
