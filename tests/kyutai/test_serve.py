"""``moshi-services serve --http-port`` serves the Kyutai endpoints and /metrics over the
services it builds, behind its --auth-token as Kyutai's clients send it (and as Prometheus
sends it for /metrics)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from services.core import stats_pb2, stats_pb2_grpc
from services.core.grpc_server import create_channel
from tests.grpc.conftest import spawn_serve
from tests.kyutai.conftest import TOKEN, pack, unpack


def scrape(base: str) -> dict:
    request = urllib.request.Request(f"http://{base}/metrics",
                                     headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return {f.name: f for f in text_string_to_metric_families(reply.read().decode())}


def test_serve_speaks_kyutai_and_prometheus_on_its_http_port():
    process, port = spawn_serve("--http-port", "0", "--max-sessions", "2", "--asr-text-delay",
                             "2", "--tts-audio-delay", "2", "--auth-token", TOKEN)
    try:
        base = f"127.0.0.1:{process.http_port}"
        key = {"kyutai-api-key": TOKEN}
        with connect(f"ws://{base}/api/asr-streaming", additional_headers=key) as ws:
            assert unpack(ws.recv(timeout=30)) == {"type": "Ready"}
            ws.send(pack("Audio", pcm=np.zeros(1920 * 3, np.float32).tolist()))
            ws.send(pack("Marker", id=3))
            ws.send(pack("Audio", pcm=np.zeros(1920 * 3, np.float32).tolist()))
            while (message := unpack(ws.recv(timeout=30)))["type"] != "Marker":
                assert message["type"] in ("Word", "EndWord", "Step")
            assert message["id"] == 3
        with connect(f"ws://{base}/api/tts_streaming?format=PcmMessagePack&auth_id={TOKEN}"
                     ) as ws:
            ws.send("Hello")
            ws.send(pack("Eos"))
            kinds = [unpack(m)["type"] for m in ws]
        assert kinds[0] == "Ready" and "Audio" in kinds
        with connect(f"ws://{base}/api/chat?format=pcm", additional_headers=key) as ws:
            assert ws.recv(timeout=30) == b"\x00"
        # Refused calls count too: a websocket without the key, a gRPC call without it.
        with pytest.raises(InvalidStatus):
            connect(f"ws://{base}/api/chat")
        with create_channel(f"127.0.0.1:{port}") as channel, \
                pytest.raises(grpc.RpcError) as unauthenticated:
            stats_pb2_grpc.EngineStatsStub(channel).GetStats(stats_pb2.GetStatsRequest(),
                                                             timeout=30)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{base}/metrics", timeout=10)
        assert refused.value.code == 401
        # The client may see its status a moment before the server's handler has finished
        # (and counted it): scrape until the refused gRPC call is there, a few seconds at most.
        refused_call = ("grpc", "/services.core.EngineStats/GetStats", "unauthenticated")
        deadline = time.monotonic() + 10
        while True:
            families = scrape(base)
            counted = {(s.labels["protocol"], s.labels["method"], s.labels["status"]): s.value
                       for s in families["moshi_requests"].samples
                       if s.name == "moshi_requests_total"}
            if refused_call in counted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {k: v for k, v in counted.items() if k[0] == "kyutai"} == {
            ("kyutai", "/api/asr-streaming", "ok"): 1, ("kyutai", "/api/tts_streaming", "ok"): 1,
            ("kyutai", "/api/chat", "ok"): 1, ("kyutai", "/api/chat", "unauthenticated"): 1}
        assert counted.get(refused_call) == 1, counted
        assert "moshi_engine_step_seconds" in families
    finally:
        process.terminate()
        process.wait(30)
