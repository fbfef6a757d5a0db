import queue
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import (
    ServerOptions,
    create_channel,
    create_server,
)
from services.core.grpc_stream import RETRY_DELAY_SECONDS
from services.mimi import mimi_pb2, mimi_pb2_grpc
from services.mimi.service import MimiService
from services.wiring import close_all
from tests.conftest import FIXTURES

FRAME_BYTES = 4 * 1920


class OpenStream:
    """A StreamingEncode call whose requests the test sends one by one."""

    def __init__(self, stub, metadata=None):
        self._requests: queue.Queue = queue.Queue()
        self._requests.put(mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
            encoding=PCM_F32LE, sample_rate_hertz=24_000)))
        self.call = stub.StreamingEncode(iter(self._requests.get, None), metadata=metadata)

    def frame(self):
        self._requests.put(mimi_pb2.StreamingEncodeRequest(audio=b"\0" * FRAME_BYTES))
        return next(self.call)

    def end(self):
        self._requests.put(None)
        return list(self.call)


@pytest.fixture
def one_slot(start_server, tiny_mimi):
    service = MimiService.create(tiny_mimi, max_sessions=1, idle_timeout=10)
    channel = start_server([service], auth_token=None).channel
    return service, channel


def test_health_reflection_and_stats(one_slot):
    _, channel = one_slot
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", "services.mimi.Mimi"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    listed = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"services.mimi.Mimi", "grpc.health.v1.Health",
            "services.core.EngineStats"} <= set(listed)
    stream = OpenStream(mimi_pb2_grpc.MimiStub(channel))
    stream.frame()
    stream.end()
    (figures,) = stats_pb2_grpc.EngineStatsStub(channel).GetStats(
        stats_pb2.GetStatsRequest()).engines
    assert figures.name == "mimi" and figures.max_sessions == 2  # 1 encoder + 1 decoder slot
    assert figures.steps >= 3 and figures.step_ms_p50 > 0  # warm-up frames + this stream


def test_capacity_full_then_cancel_frees_the_slot_at_once(one_slot):
    service, channel = one_slot
    stub = mimi_pb2_grpc.MimiStub(channel)
    first = OpenStream(stub)
    assert first.frame().frame_index == 0
    with pytest.raises(grpc.RpcError) as error:
        OpenStream(stub).frame()
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "in use" in error.value.details()
    (detail,) = rpc_status.from_call(error.value).details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.seconds == RETRY_DELAY_SECONDS > 0
    with pytest.raises(grpc.RpcError):
        stub.Encode(mimi_pb2.EncodeRequest(config=mimi_pb2.EncodeConfig(
            encoding=PCM_F32LE, sample_rate_hertz=24_000), audio=b"\0" * FRAME_BYTES))
    first.call.cancel()
    deadline = time.monotonic() + 1.0
    while service.engine.stats().active_sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.engine.stats().active_sessions == 0
    second = OpenStream(stub)
    assert second.frame().frame_index == 0
    assert len(second.end()) == 0


def test_deadline_frees_the_slot(one_slot):
    service, channel = one_slot
    stub = mimi_pb2_grpc.MimiStub(channel)
    requests: queue.Queue = queue.Queue()
    requests.put(mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
        encoding=PCM_F32LE, sample_rate_hertz=24_000)))
    with pytest.raises(grpc.RpcError) as error:
        list(stub.StreamingEncode(iter(requests.get, None), timeout=0.3))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 1.0
    while service.engine.stats().active_sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.engine.stats().active_sessions == 0
    assert OpenStream(stub).frame().frame_index == 0


def test_bearer_token(start_server, tiny_mimi):
    service = MimiService.create(tiny_mimi, max_sessions=1)
    channel = start_server([service], auth_token="s3cret").channel
    stub = mimi_pb2_grpc.MimiStub(channel)
    for metadata, message in [(None, "missing bearer token"),
                              ((("authorization", "Bearer nope"),), "wrong bearer token")]:
        with pytest.raises(grpc.RpcError) as error:
            stub.GetInfo(mimi_pb2.GetInfoRequest(), metadata=metadata)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in error.value.details()
        with pytest.raises(grpc.RpcError) as error:
            OpenStream(stub, metadata=metadata).frame()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    good = (("authorization", "Bearer s3cret"),)
    assert stub.GetInfo(mimi_pb2.GetInfoRequest(), metadata=good).frame_size == 1920
    stream = OpenStream(stub, metadata=good)  # refused calls took no slot
    assert np.array(stream.frame().frame.codes).shape == (8,)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_tls(tiny_mimi):
    cert = (FIXTURES / "tls_localhost.crt").read_bytes()  # self-signed, for tests only
    key = (FIXTURES / "tls_localhost.key").read_bytes()
    service = MimiService.create(tiny_mimi, max_sessions=1)
    server, port = create_server([service], "127.0.0.1:0",
                                 ServerOptions(tls_cert_chain=cert, tls_private_key=key))
    try:
        with create_channel(f"localhost:{port}", root_certificates=cert) as channel:
            info = mimi_pb2_grpc.MimiStub(channel).GetInfo(mimi_pb2.GetInfoRequest())
            assert info.frame_size == 1920
        with create_channel(f"localhost:{port}") as plain, pytest.raises(grpc.RpcError):
            mimi_pb2_grpc.MimiStub(plain).GetInfo(mimi_pb2.GetInfoRequest(), timeout=2)
    finally:
        server.stop(None)
        close_all([service])


def test_health_is_not_serving_until_warmed_up(tiny_mimi):
    service = MimiService.create(tiny_mimi, max_sessions=1)
    server, port = create_server([service], "127.0.0.1:0", warm_up=False)
    try:
        with create_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="services.mimi.Mimi")
            assert stub.Check(check).status == health_pb2.HealthCheckResponse.NOT_SERVING
            service.warm_up()
            server.set_health(serving=True)
            assert stub.Check(check).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)
        close_all([service])


def test_an_idle_stream_is_closed_and_its_slot_freed(start_server, tiny_mimi):
    service = MimiService.create(tiny_mimi, max_sessions=1, idle_timeout=0.4)
    stub = mimi_pb2_grpc.MimiStub(start_server([service]).channel)
    stream = OpenStream(stub)
    assert stream.frame().frame_index == 0  # then silence from the client
    with pytest.raises(grpc.RpcError) as error:
        next(stream.call)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle" in error.value.details()
    assert service.engine.stats().active_sessions == 0
