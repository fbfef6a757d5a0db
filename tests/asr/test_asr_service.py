"""The ASR service on a real server (port 0) with the tiny STT-layout golden checkpoints and a
stand-in codec whose codes fit their 64-entry codebooks."""

import json
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import torch

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.mode import RecognitionMode, frames_of_clip
from services.asr.service import ASRService
from services.asr.timing import SttTiming
from services.asr.words import WordDecoder
from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.tick import speech_engine
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import load_lm
from services.wiring import close_all
from tests.conftest import FIXTURES, load_golden

TIMING = SttTiming(audio_delay_seconds=0.48)
PIECES = {i: ("▁" if i % 4 == 0 else "") + f"t{i}" for i in range(300)}


def decode(ids):
    return "".join(PIECES[i] for i in ids).replace("▁", " ")


def codes_of(frame: np.ndarray) -> np.ndarray:
    """The stand-in codec: 32 codes in [0, 64) from a frame's first sample."""
    return (round(float(frame[0]) * 1000) * 7 + np.arange(32) * 5) % 64


class NoState:
    def reset(self, mask=None):
        pass

    def first_sessions(self, n):
        return self


class StandInCodec:
    """Mimi's streaming-encoder interface, codes computed by ``codes`` from each frame: codes
    that fit the golden STT checkpoints' 64-entry codebooks."""

    cfg = SimpleNamespace(max_codebooks=32)
    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, codes=codes_of):
        self.codes = codes

    def init_encoder_state(self, batch_size, device=None):
        return NoState()

    init_decoder_state = init_encoder_state

    def encode_step(self, pcm, state, active=None, num_codebooks=None):
        codes = np.stack([self.codes(frame) for frame in pcm[:, 0].numpy()])
        return torch.from_numpy(codes)[:, :num_codebooks, None]


def load(name):
    config = LMConfig.from_dict(json.loads((FIXTURES / f"{name}.json").read_text()))
    return load_lm(FIXTURES / f"{name}.safetensors", config=config)


def serve(model, codec, name):
    engine = speech_engine(2, LMGenerator(model), codec)
    service = ASRService.on_stt(engine, model.cfg, decode, name, timing=TIMING)
    srv, port = create_server([service], "127.0.0.1:0", ServerOptions())
    return srv, create_channel(f"127.0.0.1:{port}"), service


@pytest.fixture(scope="module", params=["lm_dev_stt", "lm_dev_stt_vad"])
def server(request):
    model = load(request.param)
    srv, channel, service = serve(model, StandInCodec(), request.param)
    yield asr_pb2_grpc.SpeechRecognitionStub(channel), model
    channel.close()
    srv.stop(None)
    close_all([service])


def clip(frames: int = 30, extra: int = 1000) -> np.ndarray:
    """Whole frames plus ``extra`` samples (a partial last frame)."""
    pcm = np.zeros((frames + 1, 1920), np.float32)
    pcm[:, 0] = np.random.default_rng(5).integers(1, 60, frames + 1) / 1000
    return pcm.reshape(-1)[:frames * 1920 + extra]


CONFIG = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                   interim_results=True, pause_probabilities=True,
                                   text_sampling={"temperature": 0})


def in_process_words(model, pcm):
    """The reference: the clip framed as a clip is, its first frame fed twice, stepped on the
    LM alone; the words decoded from its text."""
    mode = RecognitionMode.for_stt(model.cfg, TIMING, decode, SamplingSettings.greedy())
    frames = frames_of_clip(pcm, mode)
    codes = torch.from_numpy(np.stack([codes_of(f) for f in frames]))
    generator = LMGenerator(model)
    state = generator.init_state(1, SamplingSettings.greedy())
    decoder = WordDecoder(decode, TIMING)
    for frame in torch.cat([codes[:1], codes]):
        decoder.push(generator.step(state, frame[None]).frame[0, 0].item())
    decoder.flush()
    return decoder.words


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


def test_pause_events_match_reference():
    """lm_dev_stt_vad through the service: the pause events carry the four heads' prob[0]
    of the golden run (within 1e-5), the tokens being the golden ones."""
    golden = load_golden("lm_dev_stt_vad_greedy")
    columns = golden["user_codes"].numpy()  # the golden run feeds column t at step t

    def codes(frame):  # the frame's first sample names its column
        return columns[:, round(float(frame[0]) * 1000)]

    srv, channel, service = serve(load("lm_dev_stt_vad"), StandInCodec(codes), "vad")
    try:
        # Column 0 is never heard (step 0 sees the initial tokens): the clip is columns 1..
        steps = columns.shape[1]
        pcm = np.zeros((steps - 1, 1920), np.float32)
        pcm[:, 0] = np.arange(1, steps) / 1000
        config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                           pause_probabilities=True,
                                           text_sampling={"temperature": 0})
        requests = [asr_pb2.StreamingRecognizeRequest(config=config),
                    asr_pb2.StreamingRecognizeRequest(audio=pcm.tobytes())]
        stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
        pauses = [list(r.pause.probabilities) for r in stub.StreamingRecognize(iter(requests))
                  if r.HasField("pause")]
        # Frame j's pauses are those of its own step, j + 1 (frame 0 is stepped twice).
        expected = golden["extra_heads_probs"][1:, :, 0].numpy()
        np.testing.assert_allclose(np.array(pauses[:steps - 1]), expected, atol=1e-5, rtol=0)
    finally:
        channel.close()
        srv.stop(None)
        close_all([service])
