import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.dialogue import dialogue
from cli.mimi import mimi
from services.core.grpc_server import create_channel
from services.dialogue.service import DialogueService
from services.mimi.codes_file import load_codes
from services.mimi.service import MimiService
from services.moshi_lm.service import MoshiLMService
from tests.grpc.conftest import spawn_serve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def question(tmp_path) -> Path:
    """0.5 s of stereo noise at 16 kHz: the client resamples and mixes down."""
    path = tmp_path / "question.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, 0.1 * rng.standard_normal((8000, 2)), 16_000)
    return path


def run_dialogue(args) -> str:
    result = CliRunner().invoke(dialogue, [*map(str, args), "--seed", "3", "--fast"])
    assert result.exit_code == 0, result.output
    return result.output


def test_dialogue_in_process_and_over_a_server_agree(question, tmp_path, start_server,
                                                     tiny_mimi, tiny_lm):
    run_dialogue([question, "-o", tmp_path / "local.wav"])
    mimi = MimiService.create(tiny_mimi, max_sessions=2)
    lm = MoshiLMService.create(tiny_lm, "tiny", max_sessions=1)
    address = start_server([mimi, lm, DialogueService(mimi, lm)]).address
    output = run_dialogue([question, "-o", tmp_path / "remote.wav", "--server", address])
    assert "frame round trip p50" in output
    local, rate = soundfile.read(tmp_path / "local.wav")
    remote, _ = soundfile.read(tmp_path / "remote.wav")
    assert rate == 24_000 and len(local) == 6 * 1920  # 7 frames in, 1 of delay
    # Same codes and tokens; the codec's batch width differs (1 vs 2 slots), which may move
    # a float by an ulp and a 16-bit sample by one step.
    np.testing.assert_allclose(remote, local, atol=1.5 / 32768)
    assert (tmp_path / "remote.txt").exists()


def test_serve_warms_up_serves_and_stops_on_sigterm():
    process, port = spawn_serve("--threads", "1", "--services", "mimi,lm")
    try:
        health = health_pb2_grpc.HealthStub(create_channel(f"127.0.0.1:{port}"))
        for name in ["", "services.mimi.Mimi", "services.moshi_lm.MoshiLM"]:
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "shutting down" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def test_mimi_encode_and_decode_through_a_server(question, tmp_path, start_server, tiny_mimi):
    address = start_server([MimiService.create(tiny_mimi, max_sessions=2)]).address
    runner = CliRunner()
    for args in (["encode", question, tmp_path / "local.safetensors", "-k", "6"],
                 ["encode", question, tmp_path / "remote.safetensors", "-k", "6",
                  "--server", address],
                 ["decode", tmp_path / "local.safetensors", tmp_path / "local.wav"],
                 ["decode", tmp_path / "local.safetensors", tmp_path / "remote.wav",
                  "--server", address]):
        result = runner.invoke(mimi, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    local, remote = (load_codes(tmp_path / f"{n}.safetensors") for n in ("local", "remote"))
    assert remote.num_samples == local.num_samples == 12_000
    assert remote.model == local.model
    np.testing.assert_array_equal(remote.codes.numpy(), local.codes.numpy())
    local_wav, _ = soundfile.read(tmp_path / "local.wav")
    remote_wav, _ = soundfile.read(tmp_path / "remote.wav")
    assert len(remote_wav) == 12_000
    np.testing.assert_allclose(remote_wav, local_wav, atol=2 / 32768)


def test_mimi_server_errors_are_reported(question, tmp_path):
    result = CliRunner().invoke(mimi, ["encode", str(question), str(tmp_path / "x.safetensors"),
                                       "--server", "127.0.0.1:1"])
    assert result.exit_code != 0 and "127.0.0.1:1" in result.output


def test_dialogue_needs_exactly_one_input(question):
    result = CliRunner().invoke(dialogue, [str(question), "--mic"])
    assert result.exit_code == 2 and "an input audio file, or --mic" in result.output
    result = CliRunner().invoke(dialogue, [])
    assert result.exit_code == 2


def test_dialogue_mic_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if not installed
    result = CliRunner().invoke(dialogue, ["--mic"])
    assert result.exit_code == 2 and "pip install 'moshi-services[audio]'" in result.output
