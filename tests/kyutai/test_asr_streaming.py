"""/api/asr-streaming driven by a real websocket client sending Kyutai's msgpack messages:
the same words as our gRPC StreamingRecognize for the same audio."""

from __future__ import annotations

import numpy as np
import sphn
from websockets.sync.client import connect

from services.asr import asr_pb2, asr_pb2_grpc
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from tests.kyutai.conftest import TEXT_DELAY, pack, unpack

FRAME = 1920
RNG = np.random.default_rng(11)
SPEECH = (0.3 * RNG.standard_normal(FRAME * 40 + 700)).astype(np.float32)
DELAY = TEXT_DELAY * FRAME  # the marker's delay: the words of the audio before it are out
SILENCE = np.zeros(FRAME, np.float32)
# The tiny random model says words when its text is sampled (greedy: padding only).
TEMPERATURE, SEED = 0.7, 1
SAMPLING = {"temperature": TEMPERATURE, "seed": SEED}


def chunks(pcm: np.ndarray, size: int):
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


def kyutai_stream(url: str, audio_messages: list[bytes], marker: int = 1) -> list[dict]:
    """Sends the audio, a Marker, then silence until the Marker comes back: every message
    received (Ready first)."""
    with connect(url) as ws:
        received = [unpack(ws.recv(timeout=10))]
        for message in audio_messages:
            ws.send(message)
        ws.send(pack("Marker", id=marker))
        while received[-1].get("type") != "Marker":
            ws.send(pack("Audio", pcm=SILENCE.tolist()))
            while True:
                try:
                    received.append(unpack(ws.recv(timeout=0.05)))
                except TimeoutError:
                    break
                if received[-1]["type"] == "Marker":
                    break
    return received


def grpc_events(channel, audio: np.ndarray, marker_at: int, seed: int = SEED) -> list:
    """Our StreamingRecognize (interim results) on ``audio`` with a marker after sample
    ``marker_at``: its events up to the marker's acknowledgement."""
    stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                       interim_results=True, seed=seed,
                                       text_sampling=SamplingParams(temperature=TEMPERATURE))

    def requests():
        yield asr_pb2.StreamingRecognizeRequest(config=config)
        yield asr_pb2.StreamingRecognizeRequest(audio=audio[:marker_at].tobytes())
        yield asr_pb2.StreamingRecognizeRequest(marker=asr_pb2.Marker(id=1))
        yield asr_pb2.StreamingRecognizeRequest(audio=np.zeros(FRAME * 20, np.float32).tobytes())

    events = []
    for response in stub.StreamingRecognize(requests(), timeout=30):
        if response.WhichOneof("event") == "marker":
            return events
        events.append(response)
    raise AssertionError("the marker never came back")


def as_kyutai(events) -> list[dict]:
    """What Kyutai's protocol says of our words: Word when heard, EndWord when it ends."""
    out, announced = [], None
    for event in events:
        if event.WhichOneof("event") != "word":
            continue
        word = event.word
        if word.start_seconds != announced:
            out.append({"type": "Word", "text": word.text, "start_time": word.start_seconds})
            announced = word.start_seconds
        if word.HasField("end_seconds"):
            out.append({"type": "EndWord", "stop_time": word.end_seconds})
            announced = None
    return out


def close(a: list[dict], b: list[dict]) -> bool:
    """Equal, floats to float32 (both sides' precision on the wire)."""
    def norm(m):
        return {k: (np.float32(v) if isinstance(v, float) else v) for k, v in m.items()}
    return [norm(m) for m in a] == [norm(m) for m in b]


def test_words_equal_grpc_streaming_recognize(served):
    messages = [pack("Audio", pcm=c.tolist()) for c in chunks(SPEECH, 1000)]
    received = kyutai_stream(served.url("/api/asr-streaming", **SAMPLING), messages)
    assert received[0] == {"type": "Ready"}
    assert received[-1] == {"type": "Marker", "id": 1}
    words = received[1:-1]
    # The client's silence after the marker, up to where the marker is fed: the same audio.
    audio = np.concatenate([SPEECH, np.zeros(DELAY, np.float32)])
    expected = as_kyutai(grpc_events(served.channel, audio, len(audio)))
    assert expected, "the tiny model said no word: pick other audio"
    assert close(words, expected)
    assert {m["type"] for m in words} <= {"Word", "EndWord"}


def test_ogg_opus_input_equals_the_same_audio_decoded(served):
    writer, reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
    pages = [writer.append_pcm(c) for c in chunks(SPEECH[:FRAME * 40], FRAME)]
    decoded = np.concatenate([reader.append_bytes(p) for p in pages])
    seed = 3  # one the tiny model says a word with, for this audio
    received = kyutai_stream(served.url("/api/asr-streaming", temperature=TEMPERATURE, seed=seed),
                             [pack("OggOpus", data=p) for p in pages if p])
    audio = np.concatenate([decoded, np.zeros(DELAY, np.float32)])
    expected = as_kyutai(grpc_events(served.channel, audio, len(audio), seed))
    assert expected
    assert close(received[1:-1], expected)


def test_markers_come_back_in_order(served):
    with connect(served.url("/api/asr-streaming", **SAMPLING)) as ws:
        assert unpack(ws.recv(timeout=10)) == {"type": "Ready"}
        for marker in (5, 6):
            ws.send(pack("Audio", pcm=SPEECH[:FRAME * 2].tolist()))
            ws.send(pack("Marker", id=marker))
        ws.send(pack("Audio", pcm=np.zeros(DELAY, np.float32).tolist()))
        markers = []
        while len(markers) < 2:
            message = unpack(ws.recv(timeout=10))
            if message["type"] == "Marker":
                markers.append(message["id"])
    assert markers == [5, 6]


def test_words_are_told_when_heard_and_ended():
    from services.asr.mode import ASREvent
    from services.asr.words import Word
    from services.kyutai.asr import _Writer

    writer = _Writer()
    told = [unpack(m) for e in (ASREvent(1.0, word=Word("hel", 0.5, None)),
                                ASREvent(1.1, word=Word("hello", 0.5, None)),
                                ASREvent(1.2, word=Word("hello", 0.5, 0.9)),
                                ASREvent(1.3, word=Word("you", 0.9, 1.1)),
                                ASREvent(1.3, pauses=[0.25]), ASREvent(1.3, marker=4))
            for m in writer.messages(e)]
    assert told == [{"type": "Word", "text": "hel", "start_time": 0.5},
                    {"type": "EndWord", "stop_time": np.float32(0.9)},
                    {"type": "Word", "text": "you", "start_time": np.float32(0.9)},
                    {"type": "EndWord", "stop_time": np.float32(1.1)},
                    {"type": "Step", "step_idx": 0, "prs": [0.25], "buffered_pcm": 0},
                    {"type": "Marker", "id": 4}]
