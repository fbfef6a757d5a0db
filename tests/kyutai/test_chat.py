"""/api/chat driven by a real websocket client speaking the kind-byte protocol: Ogg-Opus pages
through sphn, and our raw-PCM variant; the same answer as our gRPC Converse for the same
audio and seed."""

from __future__ import annotations

import numpy as np
import sphn
from websockets.sync.client import connect

from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc

FRAME = 1920
RNG = np.random.default_rng(5)
QUESTION = (0.1 * RNG.standard_normal(FRAME * 12)).astype(np.float32)
QUERY = {"seed": 3, "temperature": 0.8, "top_k": 100, "text_temperature": 0.7,
         "text_top_k": 25}


def grpc_converse(channel, audio: np.ndarray) -> tuple[np.ndarray, str]:
    config = dialogue_pb2.DialogueConfig(
        input_encoding=PCM_F32LE, input_sample_rate_hertz=24000, output_encoding=PCM_F32LE,
        seed=QUERY["seed"],
        audio_sampling=SamplingParams(temperature=QUERY["temperature"], top_k=QUERY["top_k"]),
        text_sampling=SamplingParams(temperature=QUERY["text_temperature"],
                                     top_k=QUERY["text_top_k"]))
    requests = [dialogue_pb2.ConverseRequest(config=config),
                dialogue_pb2.ConverseRequest(audio=audio.tobytes())]
    responses = list(dialogue_pb2_grpc.DialogueStub(channel).Converse(iter(requests),
                                                                       timeout=60))
    return (np.concatenate([np.frombuffer(r.audio, "<f4") for r in responses]),
            "".join(r.text for r in responses))


def ws_converse(url: str, messages: list[bytes], answer_samples: int,
                decode=None) -> tuple[np.ndarray, str]:
    """Sends the user's audio messages; reads until ``answer_samples`` of Moshi's audio came
    (then hangs up, as a client does): Moshi's audio and text."""
    audio, text = [], []
    with connect(url) as ws:
        assert ws.recv(timeout=10) == b"\x00"  # the handshake
        for message in messages:
            ws.send(message)
        while sum(len(a) for a in audio) < answer_samples:
            message = ws.recv(timeout=30)
            kind, payload = message[0], message[1:]
            assert kind in (1, 2), f"unexpected kind {kind}: {payload!r}"
            if kind == 1:
                audio.append(decode(payload) if decode else np.frombuffer(payload, "<f4"))
            else:
                text.append(payload.decode())
    return np.concatenate(audio), "".join(text)


def test_pcm_variant_equals_grpc_converse(served):
    expected_audio, expected_text = grpc_converse(served.channel, QUESTION)
    # Any length per message: 1000 samples, not a frame.
    messages = [b"\x01" + QUESTION[i:i + 1000].tobytes() for i in range(0, len(QUESTION), 1000)]
    audio, text = ws_converse(served.url("/api/chat", format="pcm", **QUERY), messages,
                              len(expected_audio))
    np.testing.assert_array_equal(audio, expected_audio)
    assert text == expected_text
    assert len(expected_audio) > 0


def test_ogg_opus_equals_grpc_converse_on_the_decoded_audio(served):
    writer = sphn.OpusStreamWriter(24000)
    pages = [writer.append_pcm(f) for f in QUESTION.reshape(-1, FRAME)]
    reader = sphn.OpusStreamReader(24000)
    heard = np.concatenate([reader.append_bytes(p) for p in pages])  # what the server hears
    expected_audio, expected_text = grpc_converse(served.channel, heard)
    client_reader = sphn.OpusStreamReader(24000)
    audio, text = ws_converse(served.url("/api/chat", **QUERY),
                              [b"\x01" + p for p in pages if p], len(expected_audio),
                              decode=client_reader.append_bytes)
    # Moshi's audio as sphn encodes and decodes it, 80 ms at a time.
    server_writer, check_reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
    through_opus = np.concatenate([check_reader.append_bytes(server_writer.append_pcm(f))
                                   for f in expected_audio.reshape(-1, FRAME)])
    np.testing.assert_array_equal(audio, through_opus)
    assert text == expected_text
