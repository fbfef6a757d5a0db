"""The ASR service on a real server (port 0) with the tiny STT-layout golden checkpoints and a
stand-in codec whose codes fit their 64-entry codebooks."""

import json

import grpc
import numpy as np
import pytest
import torch

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.recognizer import Recognizer, frame_codes, transcribe
from services.asr.service import ASRService
from services.asr.timing import SttTiming
from services.asr.words import clamp_word
from services.core.common_pb2 import PCM_F32LE
from services.core.engine import Engine
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.loader import load_lm
from tests.conftest import FIXTURES

TIMING = SttTiming(audio_delay_seconds=0.48)
PIECES = {i: ("▁" if i % 4 == 0 else "") + f"t{i}" for i in range(300)}


def decode(ids):
    return "".join(PIECES[i] for i in ids).replace("▁", " ")


def codes_of(frame: np.ndarray) -> np.ndarray:
    """The stand-in codec: 32 codes in [0, 64) from a frame's first sample."""
    return (round(float(frame[0]) * 1000) * 7 + np.arange(32) * 5) % 64


class CodesStepper:
    def start(self, slots, configs):
        pass

    def step(self, slots, inputs):
        return [codes_of(x) for x in inputs]


class StandInCodec:
    def __init__(self):
        self.engine = Engine("codec", CodesStepper(), 8).start()

    def open_encoder(self, num_codebooks):
        return self.engine.open()


def load(name):
    config = LMConfig.from_dict(json.loads((FIXTURES / f"{name}.json").read_text()))
    return load_lm(FIXTURES / f"{name}.safetensors", config=config)


@pytest.fixture(scope="module", params=["lm_dev_stt", "lm_dev_stt_vad"])
def server(request):
    codec = StandInCodec()
    model = load(request.param)
    service = ASRService.create(model, decode, codec, request.param, max_sessions=2,
                                timing=TIMING)
    srv, port = create_server([service], "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield asr_pb2_grpc.SpeechRecognitionStub(channel), model
    channel.close()
    srv.stop(None)
    service.close()
    codec.engine.stop()


def clip(frames: int = 30, extra: int = 1000) -> np.ndarray:
    """Whole frames plus ``extra`` samples (a partial last frame)."""
    pcm = np.zeros((frames + 1, 1920), np.float32)
    pcm[:, 0] = np.random.default_rng(5).integers(1, 60, frames + 1) / 1000
    return pcm.reshape(-1)[:frames * 1920 + extra]


CONFIG = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                   interim_results=True, pause_probabilities=True,
                                   text_sampling={"temperature": 0})


def in_process_words(model, pcm):
    recognizer = Recognizer(model, decode, 1, TIMING)
    def batch_codec(wav):
        frames = wav[0, 0].numpy().reshape(-1, 1920)
        return torch.from_numpy(np.stack([codes_of(f) for f in frames], axis=1))[None]

    codes = frame_codes(batch_codec, pcm, TIMING)
    words = transcribe(recognizer, codes, sampling=SamplingSettings.greedy())
    # The service ends words inside the client's audio (the flush silence is not speech).
    return [clamp_word(w, len(pcm) / 24000) for w in words]


def test_streaming_equals_in_process_with_markers_and_events(server):
    stub, model = server
    pcm = clip()

    def requests():
        yield asr_pb2.StreamingRecognizeRequest(config=CONFIG)
        for i, chunk in enumerate(np.array_split(pcm, 7)):  # chunks of any size
            yield asr_pb2.StreamingRecognizeRequest(audio=chunk.tobytes())
            yield asr_pb2.StreamingRecognizeRequest(marker=asr_pb2.Marker(id=i))

    responses = list(stub.StreamingRecognize(requests()))
    finals = [r.word for r in responses if r.HasField("word")
              and r.word.HasField("end_seconds")]
    expected = in_process_words(model, pcm)
    assert expected
    assert [(w.text, w.start_seconds, w.end_seconds) for w in finals] == \
        [(w.text, pytest.approx(w.start), pytest.approx(w.end)) for w in expected]
    assert [r.marker.id for r in responses if r.HasField("marker")] == list(range(7))
    processed = [r.audio_processed_seconds for r in responses]
    assert processed == sorted(processed) and processed[-1] >= len(pcm) / 24000
    pauses = [r.pause.probabilities for r in responses if r.HasField("pause")]
    has_heads = model.cfg.extra_heads_num_heads > 0
    assert (len(pauses) > 0) == has_heads
    assert all(len(p) == 4 for p in pauses)
    info = stub.GetInfo(asr_pb2.GetInfoRequest())
    assert info.pause_prediction == has_heads and info.text_delay_seconds == pytest.approx(0.48)


def test_unary_recognize(server):
    stub, model = server
    pcm = clip(20)
    response = stub.Recognize(asr_pb2.RecognizeRequest(config=CONFIG, audio=pcm.tobytes()))
    expected = in_process_words(model, pcm)
    assert response.transcript == " ".join(w.text for w in expected)
    assert response.audio_seconds == pytest.approx((20 * 1920 + 1000) / 24000)


def test_bad_inputs(server):
    stub, _ = server

    def status(call):
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code(), info.value.details()

    code, details = status(lambda: list(stub.StreamingRecognize(iter(
        [asr_pb2.StreamingRecognizeRequest(audio=b"\0\0\0\0")]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "config" in details
    bad = asr_pb2.RecognitionConfig(sample_rate_hertz=24000)
    code, _ = status(lambda: stub.Recognize(asr_pb2.RecognizeRequest(config=bad, audio=b"")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = status(lambda: stub.Recognize(asr_pb2.RecognizeRequest(
        config=CONFIG, audio=np.array([np.nan], np.float32).tobytes())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.Recognize(asr_pb2.RecognizeRequest(config=CONFIG, audio=clip(3).tobytes()))
