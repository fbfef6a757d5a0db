"""The transport floor of bench/bench_serving.py: a ``grpc.aio`` server that speaks the ASR
protocol (SpeechRecognition/StreamingRecognize) with no engine behind it.

    PYTHONPATH=. python3 bench/bench_serving.py --models floor -n 64 256 --kinds asr

It parses every request as the real server does and answers each marker at once with the
same response (``audio_processed_seconds`` counted from the audio bytes seen), so the
bench's ASR clients send and receive exactly the messages they exchange with ``serve``. What
its process spends per session-frame is what ``grpc.aio`` and Python's event loop cost for
that traffic on this machine: the floor under any server written this way, measured in the
same run as the real rows. Health (for the bench's readiness check) and an EngineStats
service with no engines come with it.

Started by the bench as ``python3 -m bench.transport_floor --port 0``; prints
``listening on 127.0.0.1:PORT`` on standard error, as ``serve`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.asr import asr_pb2, asr_pb2_grpc
from services.core import stats_pb2, stats_pb2_grpc
from services.core.constants import SAMPLE_RATE
from services.core.engine import name_os_thread


class FloorRecognizer(asr_pb2_grpc.SpeechRecognitionServicer):
    """Markers answered at once; audio counted, never decoded."""

    async def StreamingRecognize(self, requests: AsyncIterator, context
                                 ) -> AsyncIterator[asr_pb2.StreamingRecognizeResponse]:
        sample_bytes, samples = 2, 0
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "config":
                # int16 unless the client says float32 (the bench sends PCM16).
                sample_bytes = 4 if request.config.encoding == 2 else 2
            elif kind == "audio":
                samples += len(request.audio) // sample_bytes
            elif kind == "marker":
                yield asr_pb2.StreamingRecognizeResponse(
                    marker=request.marker, audio_processed_seconds=samples / SAMPLE_RATE)


class NoEngines(stats_pb2_grpc.EngineStatsServicer):
    async def GetStats(self, request, context) -> stats_pb2.GetStatsResponse:
        return stats_pb2.GetStatsResponse()


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    asr_pb2_grpc.add_SpeechRecognitionServicer_to_server(FloorRecognizer(), server)
    stats_pb2_grpc.add_EngineStatsServicer_to_server(NoEngines(), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"listening on {host}:{bound}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    name_os_thread("grpc-aio")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
