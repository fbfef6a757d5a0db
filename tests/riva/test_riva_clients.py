"""The real nvidia-riva-client library (ASRService.streaming_response_generator,
offline_recognize, SpeechSynthesisService.synthesize / synthesize_online, the config RPCs)
against the services `serve` builds with the built-in tiny models: what it gets equals what our
own ASR and TTS services return for the same input and seed."""

from __future__ import annotations

import base64
import threading
import time

import grpc
import numpy as np
import pytest

from services.asr import asr_pb2, asr_pb2_grpc
from services.core.common_pb2 import PCM_S16LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.riva import riva_asr_pb2, riva_asr_pb2_grpc
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import RIVA_SERVICE_NAMES, ModelOptions, build_services, close_all
from tests.riva.conftest import run_riva, speech_clip, wav_bytes

RATE = 16_000
TEXT = "Hello world, this is a test."


@pytest.fixture(scope="module")
def server():
    """(address, channel, services) of a server with asr, tts and riva, as `serve` builds it
    (max sessions 4)."""
    services = build_services(["asr", "tts", "riva"], ModelOptions(max_sessions=4))
    srv, port = create_server(services, "127.0.0.1:0", ServerOptions())
    address = f"127.0.0.1:{port}"
    channel = create_channel(address)
    yield address, channel, services
    channel.close()
    srv.stop(None)
    close_all(services)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """(raw s16le 16 kHz bytes, path of the same audio as a WAV file)."""
    pcm = speech_clip()
    path = tmp_path_factory.mktemp("riva") / "clip.wav"
    path.write_bytes(wav_bytes(pcm, RATE))
    return pcm, path


def our_final_words(channel, pcm: bytes) -> list[tuple[str, int, int]]:
    """Our ASR's final words for ``pcm`` (s16le 16 kHz), times in integer ms."""
    config = asr_pb2.RecognitionConfig(encoding=PCM_S16LE, sample_rate_hertz=RATE)
    requests = [asr_pb2.StreamingRecognizeRequest(config=config)]
    requests += [asr_pb2.StreamingRecognizeRequest(audio=pcm[i:i + 3200])
                 for i in range(0, len(pcm), 3200)]
    responses = asr_pb2_grpc.SpeechRecognitionStub(channel).StreamingRecognize(iter(requests))
    return [(r.word.text, round(r.word.start_seconds * 1000), round(r.word.end_seconds * 1000))
            for r in responses if r.HasField("word") and r.word.HasField("end_seconds")]


def riva_words(results: list[dict]) -> list[tuple[str, int, int]]:
    return [(w["word"], w.get("start_time", 0), w.get("end_time", 0))
            for r in results for w in r["alternatives"][0].get("words", [])]


def streamed_results(result: dict) -> list[dict]:
    return [r for response in result["responses"] for r in response.get("results", [])]


def test_recognition_equals_our_asr_for_files_raw_pcm_and_unset_formats(riva_python, server,
                                                                        clip_files, tmp_path):
    address, channel, _ = server
    pcm, path = clip_files
    stereo = tmp_path / "stereo.wav"  # both channels the clip: mixed down, the same words
    samples = np.frombuffer(pcm, "<i2")
    stereo.write_bytes(wav_bytes(np.stack([samples, samples], 1).tobytes(), RATE, channels=2))
    expected = our_final_words(channel, pcm)
    assert expected, "the tiny model hears no word in the clip: pick another clip"
    raw = base64.b64encode(pcm).decode()
    calls = [
        {"call": "streaming", "wav": str(path)},  # transcribe_file.py: header in chunk 1
        {"call": "streaming", "wav": str(path), "unset_format": True},  # Pipecat: 0 / 0
        {"call": "streaming", "raw": raw, "encoding": 1, "sample_rate": RATE},  # LiveKit
        {"call": "streaming", "wav": str(stereo)},
        {"call": "offline", "wav": str(path), "model": "parakeet-1.1b-en-US-asr-offline"},
        {"call": "offline", "raw": raw, "encoding": 1, "sample_rate": RATE},
    ]
    streaming, unset, livekit, two_channels, offline, offline_raw = run_riva(
        riva_python, address, calls)
    transcript = "".join(f"{text} " for text, _, _ in expected)
    for result in (streaming, unset, livekit, two_channels):
        results = streamed_results(result)
        assert all(r["is_final"] for r in results)  # no interim results asked for
        assert riva_words(results) == expected
        assert "".join(r["alternatives"][0]["transcript"] for r in results) == transcript
        assert results[-1]["audio_processed"] == pytest.approx(len(pcm) / 2 / RATE, abs=0.1)
    for result in (offline, offline_raw):
        (response,) = result["responses"]
        assert riva_words(response["results"]) == expected
        # print_offline concatenates the results' transcripts: they end with a space.
        assert response["results"][0]["alternatives"][0]["transcript"] == transcript
        assert response["results"][0]["alternatives"][0]["words"][0]["confidence"] == 1.0


def test_interim_results_grow_into_the_final(riva_python, server, clip_files):
    address, _, _ = server
    _, path = clip_files
    (result,) = run_riva(riva_python, address, [
        {"call": "streaming", "wav": str(path), "interim": True}])
    results = streamed_results(result)
    interim = [r for r in results if not r.get("is_final")]
    finals = [r for r in results if r.get("is_final")]
    assert interim and finals and results[-1] is finals[-1]
    final_text = "".join(r["alternatives"][0]["transcript"] for r in finals)
    assert all(final_text.startswith(r["alternatives"][0]["transcript"].rstrip().rsplit(" ", 1)[0])
               for r in interim)


def test_synthesis_equals_our_tts(riva_python, server):
    address, channel, _ = server
    ours = tts_pb2_grpc.SpeechSynthesisStub(channel)
    results = run_riva(riva_python, address, [
        {"call": "synthesize", "text": TEXT, "sample_rate": 22050, "word_times": True},
        {"call": "synthesize", "text": TEXT, "sample_rate": 44100,
         "voice": "Magpie-Multilingual.EN-US.Aria"},  # an unknown voice: the default
        {"call": "synthesize", "text": TEXT, "sample_rate": 16000,
         "custom_configuration": {"seed": "7"}},
        {"call": "synthesize_online", "text": TEXT, "sample_rate": 22050,
         "word_times": True},  # an older client's one request, then half-close
        {"call": "synthesize_online", "text": ["Hello world.", "How are you?"],
         "sample_rate": 22050},  # 2.27: text chunks streamed
    ])
    audio = [b"".join(base64.b64decode(r.get("audio", "")) for r in result["responses"])
             for result in results]

    def synthesize(rate, seed=None):
        config = tts_pb2.SynthesisConfig(encoding=PCM_S16LE, sample_rate_hertz=rate, seed=seed)
        return ours.Synthesize(tts_pb2.SynthesizeRequest(config=config, text=TEXT))

    reference = synthesize(22050)
    assert audio[0] == reference.audio and len(audio[0]) > 0
    assert audio[1] == synthesize(44100).audio
    assert audio[2] == synthesize(16000, seed=7).audio and audio[2] != synthesize(16000).audio
    assert audio[3] == reference.audio
    assert len(results[3]["responses"]) > 1  # streamed in chunks
    # Word timings: our starts in ms, each word ending where the next starts.
    starts = [round(w.start_seconds * 1000) for w in reference.words]
    ends = [*starts[1:], round(reference.audio_seconds * 1000)]
    expected = [(w.text, s, e) for w, s, e in zip(reference.words, starts, ends, strict=True)]
    for result in (results[0], results[3]):
        words = [(w["word"], w.get("start_time", 0), w.get("end_time", 0))
                 for r in result["responses"] for w in r.get("meta", {}).get("words", [])]
        assert words == expected
    config = tts_pb2.SynthesisConfig(encoding=PCM_S16LE, sample_rate_hertz=22050)
    chunks = ours.StreamingSynthesize(iter([
        tts_pb2.StreamingSynthesizeRequest(config=config),
        tts_pb2.StreamingSynthesizeRequest(text="Hello world."),
        tts_pb2.StreamingSynthesizeRequest(text=" How are you?"),
        tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())]))
    assert audio[4] == b"".join(c.audio for c in chunks)


def test_config_rpcs_answer_as_clients_read_them(riva_python, server):
    address, _, services = server
    asr_config, tts_config = run_riva(riva_python, address, [
        {"call": "asr_config", "model": "parakeet-ctc-1.1b-en-us"}, {"call": "tts_config"}])
    (asr,) = asr_config["responses"][0]["model_config"]
    assert asr["parameters"]["language_code"] == "en-US"
    (tts,) = tts_config["responses"][0]["model_config"]
    assert {"language_code", "voice_name", "subvoices"} <= set(tts["parameters"])
    # Pipecat / talk.py --list-voices build "voice_name.subvoice" names from it.
    assert tts_config["responses"][1]["voices"] == [
        {"voice": "moshi-services.default", "language_code": "en-US"}]
    assert {s.name for s in services} >= set(RIVA_SERVICE_NAMES.values())


def test_bad_input_gets_invalid_argument_and_the_server_keeps_serving(riva_python, server,
                                                                     clip_files, tmp_path):
    address, channel, _ = server
    pcm, path = clip_files
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(path.read_bytes()[:30])  # RIFF ... WAVE, the fmt chunk cut
    odd = base64.b64encode(b"\0\0\0").decode()
    results = run_riva(riva_python, address, [
        {"call": "offline", "raw": odd, "encoding": 2},  # FLAC
        {"call": "streaming", "raw": odd, "encoding": 4},  # OGGOPUS
        {"call": "streaming", "raw": odd, "encoding": 1, "sample_rate": RATE},  # half a sample
        {"call": "offline", "wav": str(truncated)},
        {"call": "streaming", "raw": odd, "encoding": 1, "sample_rate": 10},  # rate too low
        {"call": "synthesize", "text": "   "},
        {"call": "synthesize", "text": TEXT, "encoding": 4},
        {"call": "synthesize", "text": TEXT, "sample_rate": 500},
        {"call": "synthesize", "text": TEXT, "custom_configuration": {"seed": "abc"}},
        {"call": "synthesize_online", "text": TEXT, "encoding": 20},  # ALAW
        {"call": "offline", "wav": str(path)},
    ])
    for result in results[:-1]:
        assert result.get("error") == "INVALID_ARGUMENT", result
        assert result["details"]
    assert "FLAC" in results[0]["details"] and "WAV" in results[3]["details"]
    assert riva_words(results[-1]["responses"][0]["results"]) == our_final_words(channel, pcm)
    # Protocol misuse the library cannot produce, through stubs of our protos.
    stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
    config = riva_asr_pb2.StreamingRecognitionConfig(config=riva_asr_pb2.RecognitionConfig())
    for requests in ([riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0\0")],
                     [riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config)] * 2):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamingRecognize(iter(requests)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "streaming_config" in info.value.details()


def test_bearer_token_and_capacity(riva_python, clip_files):
    """With --auth-token the Riva services want the bearer token too; with every slot taken
    a Riva call gets RESOURCE_EXHAUSTED."""
    services = build_services(["asr", "riva"], ModelOptions(max_sessions=1))
    srv, port = create_server(services, "127.0.0.1:0", ServerOptions(auth_token="sesame"))
    address = f"127.0.0.1:{port}"
    channel = create_channel(address)
    release = threading.Event()
    try:
        _, path = clip_files
        denied = run_riva(riva_python, address, [{"call": "asr_config"}])
        allowed = run_riva(riva_python, address, [{"call": "offline", "wav": str(path)}],
                           token="sesame")
        assert denied[0]["error"] == "UNAUTHENTICATED"
        assert "responses" in allowed[0]

        def hold():  # one stream takes the only slot until released
            yield riva_asr_pb2.StreamingRecognizeRequest(
                streaming_config=riva_asr_pb2.StreamingRecognitionConfig(
                    config=riva_asr_pb2.RecognitionConfig(encoding=1, sample_rate_hertz=RATE)))
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0\0" * 320)
            release.wait(60)

        holder = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel).StreamingRecognize(
            hold(), metadata=[("authorization", "Bearer sesame")])
        engine = services[0].engines()[0]
        deadline = time.monotonic() + 30
        while engine.stats().active_sessions == 0:  # until the holder has taken the slot
            assert time.monotonic() < deadline, "the holding stream never opened"
            time.sleep(0.01)
        (refused,) = run_riva(riva_python, address, [{"call": "offline", "wav": str(path)}],
                              token="sesame")
        assert refused["error"] == "RESOURCE_EXHAUSTED"
        release.set()
        list(holder)
    finally:
        release.set()
        channel.close()
        srv.stop(None)
        close_all(services)


def test_our_protos_are_the_clients(riva_python, server):
    """Every message, field (name, number, type, label), enum and method of our Riva protos
    equals the nvidia-riva-client 2.27.0's own descriptors."""
    import importlib

    from google.protobuf import descriptor_pb2

    address, _, _ = server
    theirs = run_riva(riva_python, address, [], script="descriptors.py")
    for stem, serialized in theirs.items():
        client = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
        ours = descriptor_pb2.FileDescriptorProto()
        importlib.import_module(f"services.riva.{stem}_pb2").DESCRIPTOR.CopyToProto(ours)
        for proto in (client, ours):
            for field in ("name", "dependency", "syntax"):
                proto.ClearField(field)  # paths: theirs riva/proto/, ours services/riva/
            for service in proto.service:
                for method in service.method:
                    method.ClearField("options")  # theirs carry empty options
        assert ours == client, stem
