"""/api/asr-streaming on a model with pause-prediction heads (the tiny STT-layout golden
checkpoint with VAD heads): every step's Step{prs} carries the pause probabilities our gRPC
StreamingRecognize reports for the same audio, and the words come as Word / EndWord."""

from __future__ import annotations

import numpy as np
import pytest
from websockets.sync.client import connect

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.service import ASRService
from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.tick import speech_engine
from services.kyutai.asr import AsrStreaming
from services.moshi_lm.generate import LMGenerator
from services.wiring import close_all
from tests.asr.test_asr_service import TIMING, StandInCodec, decode, load
from tests.kyutai.conftest import Served, pack, unpack
from tests.kyutai.test_asr_streaming import as_kyutai, close

FRAMES = 24
RNG = np.random.default_rng(2)
CLIP = (0.05 * RNG.standard_normal(1920 * FRAMES)).astype(np.float32)
MARKER_AT = len(CLIP) - round(TIMING.audio_delay_seconds * 24000)  # words out by the end


@pytest.fixture(scope="module")
def with_pause_heads():
    model = load("lm_dev_stt_vad")
    engine = speech_engine(2, LMGenerator(model), StandInCodec())
    service = ASRService.on_stt(engine, model.cfg, decode, "vad", timing=TIMING)
    server, port = create_server([service], "127.0.0.1:0",
                                 ServerOptions(http_address="127.0.0.1:0"),
                                 http_routes=[AsrStreaming(service)])
    running = Served(create_channel(f"127.0.0.1:{port}"), server.http_port, [service])
    yield running
    running.channel.close()
    server.stop(None).wait()
    close_all([service])


def test_steps_carry_the_pause_probabilities(with_pause_heads):
    with connect(with_pause_heads.url("/api/asr-streaming")) as ws:
        assert unpack(ws.recv(timeout=10)) == {"type": "Ready"}
        ws.send(pack("Audio", pcm=CLIP[:MARKER_AT].tolist()))
        ws.send(pack("Marker", id=1))
        ws.send(pack("Audio", pcm=CLIP[MARKER_AT:].tolist()))
        received = []
        while not received or received[-1]["type"] != "Marker":
            received.append(unpack(ws.recv(timeout=10)))

    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                       interim_results=True, pause_probabilities=True)
    requests = [asr_pb2.StreamingRecognizeRequest(config=config),
                asr_pb2.StreamingRecognizeRequest(audio=CLIP.tobytes()),
                asr_pb2.StreamingRecognizeRequest(marker=asr_pb2.Marker(id=1))]
    events = []
    for event in asr_pb2_grpc.SpeechRecognitionStub(with_pause_heads.channel) \
            .StreamingRecognize(iter(requests), timeout=30):
        if event.WhichOneof("event") == "marker":
            break
        events.append(event)
    steps = [m for m in received if m["type"] == "Step"]
    pauses = [list(e.pause.probabilities) for e in events if e.WhichOneof("event") == "pause"]
    assert len(steps) == len(pauses) >= FRAMES
    assert [s["step_idx"] for s in steps] == list(range(len(steps)))
    np.testing.assert_array_equal(np.array([s["prs"] for s in steps], np.float32),
                                  np.array(pauses, np.float32))
    assert all(s["buffered_pcm"] == 0 for s in steps)
    words = [m for m in received if m["type"] in ("Word", "EndWord")]
    assert close(words, as_kyutai(events))
