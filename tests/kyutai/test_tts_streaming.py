"""/api/tts_streaming driven by a real websocket client: the same audio and words as our
gRPC Synthesize for the same text, seed and sampling, in every format."""

from __future__ import annotations

import numpy as np
import pytest
import sphn
from websockets.sync.client import connect

from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import ModelOptions
from tests.kyutai.conftest import pack, unpack

WORDS = ["Hello", "there,", "general", "Kenobi."]
QUERY = {"seed": 7, "temperature": 0.8, "top_k": 50}


def grpc_synthesize(channel) -> tuple[np.ndarray, list[tuple[str, float]], float]:
    sampling = SamplingParams(temperature=QUERY["temperature"], top_k=QUERY["top_k"])
    config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, seed=QUERY["seed"],
                                     text_sampling=sampling, audio_sampling=sampling)
    response = tts_pb2_grpc.SpeechSynthesisStub(channel).Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text=" ".join(WORDS)), timeout=60)
    words = [(w.text, w.start_seconds) for w in response.words]
    return np.frombuffer(response.audio, "<f4"), words, response.audio_seconds


def ws_synthesize(url: str, send) -> list:
    """Every message until the server closes the socket (after the last audio)."""
    with connect(url) as ws:
        send(ws)
        return list(ws)


def send_msgpack(ws) -> None:
    for word in WORDS:
        ws.send(pack("Text", text=word))
    ws.send(pack("Eos"))


def send_raw(ws) -> None:
    for word in WORDS:
        ws.send(word)  # text frames
    ws.send(b"\0")  # the binary end of stream


@pytest.mark.parametrize("send", [send_msgpack, send_raw])
def test_pcm_message_pack_equals_grpc_synthesize(served, send):
    audio, words, seconds = grpc_synthesize(served.channel)
    messages = [unpack(m) for m in ws_synthesize(
        served.url("/api/tts_streaming", format="PcmMessagePack", **QUERY), send)]
    assert messages[0] == {"type": "Ready"}
    pcm = np.concatenate([np.asarray(m["pcm"], np.float32) for m in messages
                          if m["type"] == "Audio"])
    np.testing.assert_array_equal(pcm, audio)
    texts = [m for m in messages if m["type"] == "Text"]
    assert [(t["text"], np.float32(t["start_s"])) for t in texts] == \
        [(w, np.float32(start)) for w, start in words]
    # A word ends where the next begins; the last one with the audio.
    stops = [np.float32(t["stop_s"]) for t in texts]
    assert stops == [np.float32(s) for _, s in words[1:]] + [np.float32(seconds)]


def test_raw_pcm_is_float32_little_endian(served):
    audio, _, _ = grpc_synthesize(served.channel)
    frames = ws_synthesize(served.url("/api/tts_streaming", format="Pcm", **QUERY), send_raw)
    np.testing.assert_array_equal(np.frombuffer(b"".join(frames), "<f4"), audio)


@pytest.mark.parametrize("fmt", ["OggOpus", "OggOpusMessagePack"])
def test_ogg_opus_is_our_audio_through_sphn(served, fmt):
    audio, _, _ = grpc_synthesize(served.channel)
    messages = ws_synthesize(served.url("/api/tts_streaming", format=fmt, **QUERY),
                             send_msgpack)
    if fmt == "OggOpusMessagePack":
        decoded = [unpack(m) for m in messages]
        assert decoded[0] == {"type": "Ready"}
        pages = [m["data"] for m in decoded if m["type"] == "OggOpus"]
    else:
        pages = messages
    # The same audio encoded by sphn in the same 80 ms pieces: the same pages.
    writer = sphn.OpusStreamWriter(24000)
    expected = [writer.append_pcm(f) for f in audio.reshape(-1, 1920)]
    assert b"".join(pages) == b"".join(expected)
    reader = sphn.OpusStreamReader(24000)
    assert sum(len(reader.append_bytes(p)) for p in pages) == len(audio)


@pytest.fixture(scope="module")
def with_voices(tmp_path_factory):
    """A Kyutai-TTS-layout model (the built-in tiny one) with a folder of voices named as
    Kyutai's tts-voices repository names its files."""
    from services.core.grpc_server import ServerOptions, create_channel, create_server
    from services.wiring import build_tts_service, close_all, http_routes
    from tests.conftest import FIXTURES
    from tests.kyutai.conftest import Served

    folder = tmp_path_factory.mktemp("voices")
    (folder / "expresso").mkdir()
    voice = (FIXTURES / "tts_dev_voice.safetensors").read_bytes()
    (folder / "expresso" / "ex03_happy.wav.1e68beda@240.safetensors").write_bytes(voice)
    services = list(build_tts_service(ModelOptions(voices_dir=str(folder))))
    server, port = create_server(services, "127.0.0.1:0",
                                 ServerOptions(http_address="127.0.0.1:0"),
                                 http_routes=http_routes(services))
    running = Served(create_channel(f"127.0.0.1:{port}"), server.http_port, services)
    yield running
    running.channel.close()
    server.stop(None).wait()
    close_all(services)


def synthesize_with(channel, voice: str) -> np.ndarray:
    config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, seed=1, voice=voice)
    response = tts_pb2_grpc.SpeechSynthesisStub(channel).Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text="Hello there"), timeout=60)
    return np.frombuffer(response.audio, "<f4")


@pytest.mark.parametrize("asked,served_as", [
    ("expresso/ex03_happy.wav", "expresso/ex03_happy.wav.1e68beda@240.safetensors"),
    ("expresso/ex03_happy.wav.1e68beda@240.safetensors",
     "expresso/ex03_happy.wav.1e68beda@240.safetensors"),
    ("expresso/ex03-ex01_happy_001_channel1_334s.wav", ""),  # Kyutai's default: not here
])
def test_kyutai_voice_names_and_the_default(with_voices, asked, served_as):
    messages = [unpack(m) for m in ws_synthesize(
        with_voices.url("/api/tts_streaming", format="PcmMessagePack", seed=1, voice=asked),
        lambda ws: (ws.send("Hello there"), ws.send(pack("Eos"))))]
    pcm = np.concatenate([np.asarray(m["pcm"], np.float32) for m in messages
                          if m["type"] == "Audio"])
    np.testing.assert_array_equal(pcm, synthesize_with(with_voices.channel, served_as))


def test_voices_lists_the_folder(with_voices):
    import json
    import urllib.request

    url = f"http://127.0.0.1:{with_voices.http_port}/api/voices"
    with urllib.request.urlopen(url) as reply:
        assert json.loads(reply.read()) == {
            "voices": ["expresso/ex03_happy.wav.1e68beda@240.safetensors"],
            "default": "expresso/ex03_happy.wav.1e68beda@240.safetensors"}
