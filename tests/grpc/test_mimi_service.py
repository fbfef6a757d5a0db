import grpc
import numpy as np
import pytest
import torch

from services.core.common_pb2 import PCM_F32LE, PCM_S16LE, CodeFrame
from services.core.pcm import encode_pcm
from services.mimi import mimi_pb2, mimi_pb2_grpc
from services.mimi.client import RemoteMimi
from services.mimi.service import MimiService

FRAME = 1920


@pytest.fixture
def mimi_channel(start_server, tiny_mimi):
    service = MimiService.create(tiny_mimi, max_sessions=4, idle_timeout=10)
    return start_server([service]).channel


@pytest.fixture
def mimi_stub(mimi_channel):
    return mimi_pb2_grpc.MimiStub(mimi_channel)


def noise(seconds: float, seed: int = 0, rate: int = 24_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def stream_encode(stub, audio: bytes, chunk: int, encoding=PCM_F32LE, rate=24_000, k=0):
    def requests():
        yield mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
            encoding=encoding, sample_rate_hertz=rate, num_codebooks=k))
        for start in range(0, len(audio), chunk):
            yield mimi_pb2.StreamingEncodeRequest(audio=audio[start: start + chunk])

    responses = list(stub.StreamingEncode(requests()))
    assert [r.frame_index for r in responses] == list(range(len(responses)))
    return np.array([r.frame.codes for r in responses]).T  # [K, T]


def in_process_encode(model, audio: np.ndarray, k: int | None = None) -> np.ndarray:
    with torch.inference_mode():
        return model.encode(torch.from_numpy(audio)[None, None], k)[0].numpy()


def test_get_info(mimi_stub):
    info = mimi_stub.GetInfo(mimi_pb2.GetInfoRequest())
    assert (info.sample_rate_hertz, info.frame_size, info.frame_rate_hertz) == (24000, 1920, 12.5)
    assert (info.cardinality, info.max_codebooks, info.default_codebooks) == (2048, 32, 8)
    assert info.max_sessions == 4


@pytest.mark.parametrize("chunk_bytes", [4 * FRAME, 4 * 777, 4 * 5000])
def test_streaming_encode_equals_in_process(mimi_stub, tiny_mimi, chunk_bytes):
    audio = noise(0.5)  # 6.25 frames: the last is zero-padded like the batch encode
    codes = stream_encode(mimi_stub, encode_pcm(audio, PCM_F32LE), chunk_bytes)
    np.testing.assert_array_equal(codes, in_process_encode(tiny_mimi, audio))


def test_unary_encode_resamples_and_round_trips(mimi_stub, tiny_mimi):
    audio16k = noise(0.4, rate=16_000)
    response = mimi_stub.Encode(mimi_pb2.EncodeRequest(
        config=mimi_pb2.EncodeConfig(encoding=PCM_S16LE, sample_rate_hertz=16_000,
                                     num_codebooks=4),
        audio=encode_pcm(audio16k, PCM_S16LE)))
    assert response.num_samples == 9600 and response.codes.num_codebooks == 4
    codes = np.array(response.codes.codes).reshape(4, response.codes.num_frames)
    decoded = mimi_stub.Decode(mimi_pb2.DecodeRequest(codes=response.codes, encoding=PCM_F32LE,
                                                      num_samples=response.num_samples))
    assert decoded.num_samples == 9600
    with torch.inference_mode():
        expected = tiny_mimi.decode(torch.from_numpy(codes)[None])[0, 0, :9600].numpy()
    np.testing.assert_array_equal(np.frombuffer(decoded.audio, "<f4"), expected)


def test_streaming_decode_equals_in_process(mimi_stub, tiny_mimi):
    codes = in_process_encode(tiny_mimi, noise(0.4, seed=3))

    def requests():
        yield mimi_pb2.StreamingDecodeRequest(config=mimi_pb2.DecodeConfig(
            num_codebooks=8, encoding=PCM_F32LE))
        for frame in codes.T:
            yield mimi_pb2.StreamingDecodeRequest(frame=CodeFrame(codes=frame.tolist()))

    audio = np.concatenate([np.frombuffer(r.audio, "<f4")
                            for r in mimi_stub.StreamingDecode(requests())])
    with torch.inference_mode():
        expected = tiny_mimi.decode(torch.from_numpy(codes)[None])[0, 0].numpy()
    np.testing.assert_allclose(audio, expected, atol=1e-5)


def encode_call(stub, *requests):
    return list(stub.StreamingEncode(iter(requests)))


def config(encoding=PCM_F32LE, rate=24_000, k=0):
    return mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
        encoding=encoding, sample_rate_hertz=rate, num_codebooks=k))


def audio_request(data: bytes):
    return mimi_pb2.StreamingEncodeRequest(audio=data)


@pytest.mark.parametrize(("requests", "message"), [
    ([audio_request(b"\0" * 8)], "first request of a stream must be the config"),
    ([config(), config()], "one config"),
    ([config(encoding=0)], "unsupported audio encoding"),
    ([config(encoding=7)], "unsupported audio encoding"),
    ([config(rate=0)], "sample_rate_hertz must be in"),
    ([config(rate=10_000_000)], "sample_rate_hertz must be in"),
    ([config(k=33)], "num_codebooks must be in"),
    ([config(), audio_request(encode_pcm(np.array([0, np.nan], np.float32), PCM_F32LE))],
     "NaN or infinite"),
    ([config(), audio_request(encode_pcm(np.array([np.inf], np.float32), PCM_F32LE))],
     "NaN or infinite"),
    ([config(encoding=PCM_S16LE), audio_request(b"\0\0\0")], "multiple of 2 bytes"),
])
def test_bad_stream_input_is_invalid_argument(mimi_stub, requests, message):
    with pytest.raises(grpc.RpcError) as error:
        encode_call(mimi_stub, *requests)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    assert len(encode_call(mimi_stub, config(), audio_request(b"\0" * 4 * FRAME))) == 1


@pytest.mark.parametrize(("frame", "message"), [
    ([1, 2, 3], "expected 8 codebooks"),
    ([0] * 7 + [2048], "out of range"),
    ([0] * 7 + [-1], "out of range"),
])
def test_bad_code_frames_are_invalid_argument(mimi_stub, frame, message):
    requests = [mimi_pb2.StreamingDecodeRequest(config=mimi_pb2.DecodeConfig(
        num_codebooks=8, encoding=PCM_S16LE)),
        mimi_pb2.StreamingDecodeRequest(frame=CodeFrame(codes=frame))]
    with pytest.raises(grpc.RpcError) as error:
        list(mimi_stub.StreamingDecode(iter(requests)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_oversize_message_is_refused_and_the_server_goes_on(mimi_stub):
    too_big = b"\0" * (4 << 20)
    with pytest.raises(grpc.RpcError) as error:
        mimi_stub.Encode(mimi_pb2.EncodeRequest(
            config=mimi_pb2.EncodeConfig(encoding=PCM_S16LE, sample_rate_hertz=24_000),
            audio=too_big))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert mimi_stub.GetInfo(mimi_pb2.GetInfoRequest()).frame_size == FRAME


def test_remote_client_streams_long_signals(mimi_channel, tiny_mimi):
    client = RemoteMimi(mimi_channel)
    audio = noise(2.5, seed=5)  # 32 frames: more than every queue on the way holds
    codes = client.encode(audio, num_codebooks=3, chunk_seconds=0.3)
    np.testing.assert_array_equal(codes, in_process_encode(tiny_mimi, audio, 3))
    with torch.inference_mode():
        expected = tiny_mimi.decode(torch.from_numpy(codes)[None])[0, 0].numpy()
    np.testing.assert_allclose(client.decode(codes), expected, atol=1e-5)
