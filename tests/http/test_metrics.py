"""/metrics scraped and parsed (prometheus_client.parser) during a run of 16 concurrent
sessions, half Kyutai websockets and half gRPC streams: the figures agree with the stats RPC,
and every call is counted by protocol, method and final status."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_F32LE
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.wiring import ModelOptions, close_all
from tests.kyutai.conftest import serve

SESSIONS = 16
FRAME = np.zeros(1920, np.float32)


@pytest.fixture(scope="module")
def served():
    running, server = serve(ModelOptions(max_sessions=SESSIONS, asr_text_delay=2,
                                         tts_audio_delay=2))
    yield running
    running.channel.close()
    server.stop(None).wait()
    close_all(running.services)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def stats(channel) -> dict[str, stats_pb2.EngineFigures]:
    response = stats_pb2_grpc.EngineStatsStub(channel).GetStats(stats_pb2.GetStatsRequest())
    return {e.name: e for e in response.engines}


def engine_value(samples, name: str, engine: str) -> float:
    return samples[(name, (("engine", engine),))]


def requests(samples, protocol: str, method: str, status: str) -> float:
    return samples.get(("moshi_requests_total", (("method", method), ("protocol", protocol),
                                                 ("status", status))), 0.0)


def test_metrics_agree_with_the_stats_rpc_during_16_sessions(served):
    release, started = threading.Event(), threading.Barrier(SESSIONS + 1, timeout=60)
    failures: list[BaseException] = []

    def websocket_chat():
        with connect(served.url("/api/chat", format="pcm")) as ws:
            assert ws.recv(timeout=30) == b"\x00"
            ws.send(b"\x01" + np.tile(FRAME, 4).tobytes())
            while ws.recv(timeout=30)[0] != 1:  # Moshi's first audio
                pass
            started.wait()
            release.wait(60)

    def grpc_converse():
        config = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE,
                                             input_sample_rate_hertz=24000,
                                             output_encoding=PCM_F32LE)

        def requests_():
            yield dialogue_pb2.ConverseRequest(config=config)
            yield dialogue_pb2.ConverseRequest(audio=np.tile(FRAME, 4).tobytes())
            release.wait(60)

        responses = dialogue_pb2_grpc.DialogueStub(served.channel).Converse(requests_())
        next(responses)
        started.wait()
        list(responses)

    def run(client):
        try:
            client()
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            started.abort()

    threads = [threading.Thread(target=run, args=(c,))
               for c in [websocket_chat, grpc_converse] * (SESSIONS // 2)]
    for thread in threads:
        thread.start()
    try:
        started.wait()
        during = scrape(served.http_port)
        figures = stats(served.channel)
        (engine, figure), = figures.items()  # one engine: every service on the one LM
        assert engine_value(during, "moshi_engine_sessions_active", engine) == SESSIONS \
            == figure.active_sessions
        assert engine_value(during, "moshi_engine_sessions_max", engine) == figure.max_sessions
        assert engine_value(during, "moshi_engine_sessions_started_total", engine) \
            == figure.sessions_started
        assert 0 < engine_value(during, "moshi_engine_steps_total", engine) <= figure.steps
        # A 17th session: refused, and counted so on both sides.
        with connect(served.url("/api/chat", format="pcm")) as ws, \
                pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
            ws.recv(timeout=10)
        assert ws.close_code == 1013
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    deadline = time.monotonic() + 30
    while stats(served.channel)[engine].active_sessions and time.monotonic() < deadline:
        time.sleep(0.05)

    after, figure = scrape(served.http_port), stats(served.channel)[engine]
    assert engine_value(after, "moshi_engine_sessions_active", engine) == 0
    for name, value in [("steps", figure.steps), ("frames", figure.frames),
                        ("sessions_started", figure.sessions_started),
                        ("sessions_rejected", figure.sessions_rejected),
                        ("sessions_timed_out", figure.sessions_timed_out)]:
        assert engine_value(after, f"moshi_engine_{name}_total", engine) == value, name
    assert figure.sessions_rejected == 1
    assert engine_value(after, "moshi_engine_step_seconds_count", engine) == figure.steps
    assert after[("moshi_engine_step_seconds_bucket", (("engine", engine), ("le", "+Inf")))] \
        == figure.steps
    assert engine_value(after, "moshi_engine_step_seconds_sum", engine) > 0
    assert engine_value(after, "moshi_engine_steps_over_budget_total", engine) <= figure.steps
    ended = sum(v for (n, labels), v in after.items() if n == "moshi_engine_sessions_ended_total")
    assert ended == figure.sessions_started  # warm-up sessions included
    assert engine_value(after, "moshi_engine_queued_inputs", engine) == figure.queued_frames

    # Every call, by protocol, method and final status.
    assert requests(after, "kyutai", "/api/chat", "ok") == SESSIONS // 2
    assert requests(after, "kyutai", "/api/chat", "resource_exhausted") == 1
    assert requests(after, "grpc", "/services.dialogue.Dialogue/Converse", "ok") == SESSIONS // 2
    # Those before the last scrape: during the run, and polling for its end.
    assert requests(after, "grpc", "/services.core.EngineStats/GetStats", "ok") >= 2


def test_grpc_errors_are_counted_by_status_code(served):
    stub = dialogue_pb2_grpc.DialogueStub(served.channel)
    bad = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE, input_sample_rate_hertz=7)
    before = scrape(served.http_port)
    with contextlib.suppress(Exception):
        list(stub.Converse(iter([dialogue_pb2.ConverseRequest(config=bad)])))
    after = scrape(served.http_port)
    method = "/services.dialogue.Dialogue/Converse"
    assert requests(after, "grpc", method, "invalid_argument") \
        == requests(before, "grpc", method, "invalid_argument") + 1
