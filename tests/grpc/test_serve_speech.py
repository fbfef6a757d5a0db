"""``serve``'s services built by its own builders on a real server (127.0.0.1, port 0): by
default Mimi, LM, dialogue, ASR and TTS on one port, the last three sharing one LM engine."""

import dataclasses
import json
import queue
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cli.serve import serve
from services.asr import asr_pb2, asr_pb2_grpc
from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.moshi_lm.config import LMConfig
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import (
    ModelOptions,
    OptionsError,
    build_services,
    checkpoint_kind,
    close_all,
)
from tests.conftest import FIXTURES, golden_checkpoint

TEXT_DELAY, AUDIO_DELAY = 3, 4  # frames; small, so the tiny model's sessions stay short
# A short batch window: the concurrent sessions' frames meet in the LM's steps.
OPTIONS = ModelOptions(max_sessions=4, asr_text_delay=TEXT_DELAY, tts_audio_delay=AUDIO_DELAY,
                       batch_window=0.005)
NAMES = {"mimi": "services.mimi.Mimi", "lm": "services.moshi_lm.MoshiLM",
         "dialogue": "services.dialogue.Dialogue", "asr": "services.asr.SpeechRecognition",
         "tts": "services.tts.SpeechSynthesis"}
RNG = np.random.default_rng(4)
SPEECH = (0.2 * RNG.standard_normal(24000 * 2)).astype(np.float32)
QUESTION = (0.1 * RNG.standard_normal(24000)).astype(np.float32)


def start(names, options=OPTIONS):
    services = build_services(names, options)
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    return services, server, create_channel(f"127.0.0.1:{port}")


def stop(services, server, channel):
    channel.close()
    server.stop(None)
    close_all(services)


@pytest.fixture(scope="module")
def default_server():
    running = start(None)
    yield running[2]
    stop(*running)


def listed_and_serving(channel) -> set[str]:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", *NAMES.values()]:
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def recognize(channel, seed: int = 0) -> list:
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                       interim_results=True, seed=seed,
                                       text_sampling=SamplingParams(temperature=0.7))
    requests = [asr_pb2.StreamingRecognizeRequest(config=config)] + [
        asr_pb2.StreamingRecognizeRequest(audio=c.tobytes()) for c in np.split(SPEECH, 10)]
    return list(asr_pb2_grpc.SpeechRecognitionStub(channel).StreamingRecognize(iter(requests)))


def synthesize(channel, seed: int = 7) -> tuple[np.ndarray, list]:
    config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, seed=seed)
    response = tts_pb2_grpc.SpeechSynthesisStub(channel).Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text="Hello there, general Kenobi."))
    return np.frombuffer(response.audio, "<f4"), [(w.text, w.start_seconds)
                                                   for w in response.words]


def converse(channel, seed: int = 3) -> tuple[list, np.ndarray]:
    config = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE, input_sample_rate_hertz=24000,
                                         output_encoding=PCM_F32LE, seed=seed)
    requests = [dialogue_pb2.ConverseRequest(config=config)] + [
        dialogue_pb2.ConverseRequest(audio=c.tobytes()) for c in np.split(QUESTION, 5)]
    responses = list(dialogue_pb2_grpc.DialogueStub(channel).Converse(iter(requests)))
    return ([r.text_token for r in responses],
            np.concatenate([np.frombuffer(r.audio, "<f4") for r in responses]))


def test_default_services_share_one_port(default_server):
    assert set(NAMES.values()) <= listed_and_serving(default_server)
    info = asr_pb2_grpc.SpeechRecognitionStub(default_server).GetInfo(asr_pb2.GetInfoRequest())
    assert info.text_delay_seconds == pytest.approx(TEXT_DELAY / 12.5)
    assert not info.pause_prediction and info.num_pause_heads == 0  # no VAD heads: no events
    tts_info = tts_pb2_grpc.SpeechSynthesisStub(default_server).GetInfo(
        tts_pb2.GetInfoRequest())
    assert tts_info.audio_delay_seconds == pytest.approx(AUDIO_DELAY / 12.5)


def engine_figures(channel) -> dict:
    engines = stats_pb2_grpc.EngineStatsStub(channel).GetStats(stats_pb2.GetStatsRequest())
    return {e.name: e for e in engines.engines}


def test_asr_tts_and_dialogue_together_equal_each_alone(default_server):
    alone = [recognize(default_server), synthesize(default_server), converse(default_server)]
    before = engine_figures(default_server)["moshi_lm"]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(run, default_server) for run in (recognize, synthesize, converse)]
        together = [f.result() for f in futures]
    figures = engine_figures(default_server)
    assert sorted(figures) == ["moshi_lm"]  # one engine: codec, LM, ASR, TTS and dialogue
    lm = figures["moshi_lm"]
    assert lm.frames - before.frames > lm.steps - before.steps  # steps held several sessions
    words = [r.word for r in alone[0] if r.HasField("word") and r.word.HasField("end_seconds")]
    assert words and alone[1][1] and alone[2][0]  # each session produced something
    assert together[0] == alone[0]
    np.testing.assert_allclose(together[1][0], alone[1][0], atol=1e-5, rtol=0)
    assert together[1][1] == alone[1][1]
    assert together[2][0] == alone[2][0]
    np.testing.assert_allclose(together[2][1], alone[2][1], atol=1e-5, rtol=0)


def test_a_subset_serves_asr_and_tts_without_the_dialogue():
    services, server, channel = start(["asr", "tts"])
    try:
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {NAMES["asr"], NAMES["tts"]} <= listed and NAMES["dialogue"] not in listed
        response = asr_pb2_grpc.SpeechRecognitionStub(channel).Recognize(
            asr_pb2.RecognizeRequest(config=asr_pb2.RecognitionConfig(
                encoding=PCM_F32LE, sample_rate_hertz=24000), audio=SPEECH.tobytes()))
        assert response.audio_seconds == pytest.approx(2.0)
        audio, words = synthesize(channel)
        assert len(audio) and [w for w, _ in words] == ["Hello", "there,", "general", "Kenobi."]
    finally:
        stop(services, server, channel)


def config_of(name: str) -> dict:
    """The config.json of the golden checkpoint ``name`` (Kyutai's own when recorded)."""
    config = json.loads((FIXTURES / f"{name}.json").read_text())
    return config.get("kyutai_config") or config["config"]


def test_checkpoint_kinds():
    kinds = [checkpoint_kind(LMConfig.from_dict(config_of(name)))
             for name in ("lm_dev", "lm_dev_stt", "tts_dev")]
    assert kinds == ["moshi", "stt", "tts"]


def test_an_stt_checkpoint_refuses_the_dialogue(tmp_path):
    folder = golden_checkpoint(tmp_path, "lm_dev_stt")
    with pytest.raises(OptionsError, match="STT checkpoint serves mimi, asr, riva, not dialogue"):
        build_services(["asr", "dialogue"], ModelOptions(lm_checkpoint=folder))


def test_a_tts_checkpoint_serves_tts_with_its_voices(tmp_path):
    folder = tmp_path / "tts"  # as Kyutai ships it: config.json and the files it names
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config_of("tts_dev")))
    for name in ("tts_dev.safetensors", "tts_dev_tokenizer.model", "mimi_dev.safetensors",
                 "mimi_dev.json"):  # the codec's config: the sidecar of its file
        shutil.copy(FIXTURES / name, folder / name)
    voices = tmp_path / "voices" / "dev"
    voices.mkdir(parents=True)
    shutil.copy(FIXTURES / "tts_dev_voice.safetensors", voices / "voice.safetensors")
    options = ModelOptions(lm_checkpoint=str(folder), voices_dir=str(tmp_path / "voices"),
                           max_sessions=2)
    services, server, channel = start(None, options)
    try:
        assert [s.name for s in services] == [NAMES["mimi"], NAMES["tts"],
                                              "nvidia.riva.tts.RivaSpeechSynthesis"]
        stub = tts_pb2_grpc.SpeechSynthesisStub(channel)
        voices = stub.ListVoices(tts_pb2.ListVoicesRequest()).voices
        assert list(voices) == ["dev/voice.safetensors"]  # the default: the first voice
        with np.load(FIXTURES / "tts_dev_golden.npz") as golden:
            meta, expected = json.loads(str(golden["meta"])), golden["s0_pcm"]
        greedy = SamplingParams(temperature=0)
        config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, text_sampling=greedy,
                                         audio_sampling=greedy, cfg_coef=2.0)
        response = stub.Synthesize(tts_pb2.SynthesizeRequest(
            config=config, text=meta["scripts"]["script0"]["text"]))
        np.testing.assert_allclose(np.frombuffer(response.audio, "<f4"), expected, atol=1e-4,
                                   rtol=0)
    finally:
        stop(services, server, channel)


def test_serve_help_documents_the_delays():
    output = CliRunner().invoke(serve, ["--help"]).output
    assert "--asr-text-delay" in output and "--tts-audio-delay" in output
    assert "--voices-dir" in output and "asr, tts" in output


def test_64_mixed_sessions_on_one_engine_equal_each_alone():
    """64 concurrent dialogue, ASR and TTS sessions through one server, one engine: each
    equals the same session run alone (8 seeds per kind, so the sessions differ)."""
    kinds = [recognize, synthesize, converse]
    running = start(None, dataclasses.replace(OPTIONS, max_sessions=64))
    try:
        channel = running[2]
        alone = {(k, seed): kinds[k](channel, seed) for k in range(3) for seed in range(8)}
        jobs = [(k % 3, (k // 3) % 8) for k in range(64)]
        before = engine_figures(channel)["moshi_lm"]
        with ThreadPoolExecutor(64) as pool:
            together = list(pool.map(lambda job: kinds[job[0]](channel, job[1]), jobs))
        figures = engine_figures(channel)["moshi_lm"]
    finally:
        stop(*running)
    # The sessions did share the ticks.
    assert (figures.frames - before.frames) / (figures.steps - before.steps) > 4
    for (k, seed), result in zip(jobs, together, strict=True):
        expected = alone[(k, seed)]
        if k == 0:
            assert result == expected, (k, seed)
        else:
            tokens_or_audio = 1 if k == 1 else 0
            assert result[tokens_or_audio] == expected[tokens_or_audio], (k, seed)
            np.testing.assert_allclose(result[1 - tokens_or_audio], expected[1 - tokens_or_audio],
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["asr", "tts"])
def test_idle_asr_and_tts_calls_end_with_deadline_exceeded(kind):
    """A client that sends its config and a little input, then nothing: when the engine
    frees the idle slot, the call ends with DEADLINE_EXCEEDED (it does not hang open)."""
    # 2 s, not less: the server's warm-up sessions must not time out on a loaded machine.
    running = start(None, dataclasses.replace(OPTIONS, idle_timeout=2.0))
    release = threading.Event()
    try:
        channel = running[2]
        if kind == "asr":
            first = [asr_pb2.StreamingRecognizeRequest(config=asr_pb2.RecognitionConfig(
                encoding=PCM_F32LE, sample_rate_hertz=24000)),
                asr_pb2.StreamingRecognizeRequest(audio=SPEECH[:1920 * 5].tobytes())]
            call = asr_pb2_grpc.SpeechRecognitionStub(channel).StreamingRecognize
        else:
            first = [tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(
                encoding=PCM_F32LE)), tts_pb2.StreamingSynthesizeRequest(text="Hello")]
            call = tts_pb2_grpc.SpeechSynthesisStub(channel).StreamingSynthesize

        def requests():
            yield from first
            release.wait(30)  # then silence, without half-closing

        outcome: queue.Queue = queue.Queue()

        def read():
            try:
                list(call(requests(), timeout=30))
                outcome.put("ended OK")
            except grpc.RpcError as error:
                outcome.put(error.code())

        threading.Thread(target=read, daemon=True).start()
        assert outcome.get(timeout=25) == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
        stop(*running)


def test_streams_that_never_send_a_config_do_not_starve_the_server(default_server):
    """64 StreamingRecognize calls whose request iterator blocks before its config: health
    and GetInfo still answer at once (handlers are coroutines, not pool threads)."""
    release = threading.Event()

    def silent():
        release.wait(30)
        return
        yield  # a generator that sends nothing until released

    stub = asr_pb2_grpc.SpeechRecognitionStub(default_server)
    calls = [stub.StreamingRecognize(silent(), timeout=30) for _ in range(64)]
    try:
        health = health_pb2_grpc.HealthStub(default_server)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert stub.GetInfo(asr_pb2.GetInfoRequest(), timeout=1).model
    finally:
        release.set()
        for call in calls:
            call.cancel()
