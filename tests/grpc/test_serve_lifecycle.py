"""``serve`` as an operator meets it (issue 14, items 1 and 9): the config timeout flag, the
token documented in the environment first, a TLS key that does not match its certificate, and
the shutdown order on SIGTERM, each against a real process or the real command."""

import signal
import threading
import time

import grpc
import numpy as np
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.serve import serve
from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import create_channel
from services.mimi import mimi_pb2, mimi_pb2_grpc
from tests.conftest import FIXTURES
from tests.grpc.conftest import spawn_serve

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ENCODE = mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
    encoding=PCM_F32LE, sample_rate_hertz=24_000))
FRAME = mimi_pb2.StreamingEncodeRequest(audio=np.zeros(1920, "<f4").tobytes())


def test_help_puts_the_environment_variable_first_and_documents_the_timings():
    text = " ".join(CliRunner().invoke(serve, ["--help"]).output.split())
    assert "Prefer the environment variable MOSHI_SERVICES_TOKEN" in text
    assert "/proc/PID/cmdline" in text
    for flag in ("--config-timeout", "--drain-delay", "--grace"):
        assert flag in text


def test_a_tls_key_that_does_not_match_its_certificate_is_one_line_before_any_model():
    result = CliRunner().invoke(serve, [
        "--tls-cert", str(FIXTURES / "tls_localhost.crt"),
        "--tls-key", str(FIXTURES / "tls_other.key"), "--port", "0"])
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.endswith("the key does not match the certificate")
    assert "Failed to bind" not in result.output and "warning" not in result.output


def first_message(call, within: float):
    """The call's next message, read on a thread so a hung server fails the test."""
    box: list = []
    reader = threading.Thread(target=lambda: box.append(next(call)), daemon=True)
    reader.start()
    reader.join(within)
    assert box, f"no message within {within} s"
    return box[0]


def test_sigterm_drains_not_serving_then_listener_closed_then_streams_ended():
    drain, grace = 3.0, 2.0  # a drain long enough for a loaded machine to look in it
    process, port = spawn_serve("--services", "mimi", "--config-timeout", "0.5",
                                "--drain-delay", str(drain), "--grace", str(grace))
    address = f"127.0.0.1:{port}"
    release = threading.Event()
    try:
        with create_channel(address) as channel, create_channel(address) as watching:
            # --config-timeout reaches the server: a stream without its config is ended.
            def nothing():  # holds the request stream open, sends nothing
                release.wait(5)
                yield from ()

            never = channel.stream_stream("/services.mimi.Mimi/StreamingEncode")(
                nothing(), timeout=10)
            try:
                next(never)
                raise AssertionError("a config-less stream got a response")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "no config within 0.5 s" in error.details()

            def held():  # a stream that keeps its slot until the server ends it
                yield ENCODE
                yield FRAME
                release.wait(30)

            stream = mimi_pb2_grpc.MimiStub(channel).StreamingEncode(held())
            assert first_message(stream, 10).frame_index == 0
            watch = health_pb2_grpc.HealthStub(watching).Watch(
                health_pb2.HealthCheckRequest())
            assert first_message(watch, 5).status == SERVING

            process.send_signal(signal.SIGTERM)
            assert first_message(watch, 5).status == NOT_SERVING
            not_serving_at = time.monotonic()
            # 1. NOT_SERVING while the listener still takes new connections and calls.
            with create_channel(address) as fresh:
                assert health_pb2_grpc.HealthStub(fresh).Check(
                    health_pb2.HealthCheckRequest(), timeout=drain / 2).status == NOT_SERVING
            # 2. Then the listener closes: new connections are refused.
            while True:
                with create_channel(address) as fresh:
                    try:
                        health_pb2_grpc.HealthStub(fresh).Check(
                            health_pb2.HealthCheckRequest(), timeout=1)
                    except grpc.RpcError as error:  # refused: UNAVAILABLE (slow: try again)
                        if error.code() == grpc.StatusCode.UNAVAILABLE:
                            closed_at = time.monotonic()
                            break
                assert time.monotonic() - not_serving_at < drain + 5, "listener never closed"
                time.sleep(0.05)
            # 3. The running stream outlives the listener, then is ended (grace over).
            assert stream.is_active()
            try:
                for _ in stream:
                    pass
            except grpc.RpcError:
                pass
            ended_at = time.monotonic()
            assert stream.code() != grpc.StatusCode.OK  # ended by the server, not finished
            assert not_serving_at < closed_at < ended_at
            assert ended_at - closed_at >= grace / 2  # it was given its grace
            assert process.wait(timeout=grace + 10) == 0
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()
