"""Concurrent dialogue sessions: per-frame round trip, real-time factor, gRPC overhead.

    python bench/bench_dialogue.py                     # spawns `serve` with the tiny models
    python bench/bench_dialogue.py --server HOST:PORT -n 8 --seconds 10

(with the project installed, `pip install -e .`; from a bare checkout: PYTHONPATH=.)

For N sessions at once, each streaming its own noise in real time (80 ms per frame):
- round trip per frame: arrival of Moshi's frame n minus the moment the user frame it needed
  (n + model delay) was sent, p50 / p99 over all frames of all sessions;
- real-time factor: the same N sessions streamed as fast as possible, wall time over the
  audio duration (below 1: the server keeps up with N real-time users);
- gRPC overhead: the same runs through the in-process pipeline (same models, no server),
  compared with the gRPC ones. Only meaningful when the server runs the built-in models.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.core import stats_pb2, stats_pb2_grpc
from services.core.constants import FRAME_MS, SAMPLE_RATE
from services.core.engine import parse_batch_window_ms
from services.core.grpc_server import create_channel
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.client import Conversation, converse, remote_dialogue
from services.wiring import ModelOptions, build_services

REPO = Path(__file__).resolve().parents[1]


def run_concurrently(open_session: Callable[[int], object], sessions: int, seconds: float,
                     delay: int, realtime: bool) -> tuple[list[Conversation], float]:
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
             for _ in range(sessions)]
    results: list[Conversation | None] = [None] * sessions

    def one(i: int) -> None:
        results[i] = converse(open_session(i), audio[i], delay, realtime=realtime)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def measure(name: str, open_session, sessions: int, seconds: float, delay: int) -> dict:
    paced, _ = run_concurrently(open_session, sessions, seconds, delay, realtime=True)
    latency = np.concatenate([c.latencies_ms() for c in paced])
    _, wall = run_concurrently(open_session, sessions, seconds, delay, realtime=False)
    return {"mode": name, "frames": sum(len(c.frames) for c in paced),
            "p50": np.percentile(latency, 50), "p99": np.percentile(latency, 99),
            "rtf": wall / seconds}


def spawn_server(threads: int, sessions: int, batch_window_ms: float | None
                 ) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from cli.serve import serve; serve()", "--port", "0",
         "--threads", str(threads), "--max-sessions", str(sessions),
         "--batch-window-ms", "auto" if batch_window_ms is None else str(batch_window_ms)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
        text=True)
    port = None
    for line in process.stderr:
        if match := re.search(r"listening on [\d.]+:(\d+)", line):
            port = match[1]
        if line.startswith("serving"):
            return process, f"127.0.0.1:{port}"
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="dialogue server (default: spawn one, tiny models)")
    parser.add_argument("-n", "--sessions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per session")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--batch-window-ms", type=parse_batch_window_ms, default="auto",
                        help="engine batch window, ms or auto (spawned server and in-process)")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the in-process comparison")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    process = None
    if args.server is None:
        process, args.server = spawn_server(args.threads, args.sessions,
                                            args.batch_window_ms)
    try:
        channel = create_channel(args.server)
        stub = dialogue_pb2_grpc.DialogueStub(channel)
        delay = stub.GetInfo(dialogue_pb2.GetInfoRequest()).model_delay_frames
        rows = [measure("gRPC", lambda i: remote_dialogue(
            stub, dialogue_pb2.DialogueConfig(seed=i)), args.sessions, args.seconds, delay)]
        figures = stats_pb2_grpc.EngineStatsStub(channel).GetStats(stats_pb2.GetStatsRequest())
        if not args.no_in_process:
            window = args.batch_window_ms
            options = ModelOptions(max_sessions=args.sessions,
                                   batch_window=None if window is None else window / 1000)
            services = build_services(["dialogue"], options)
            dialogue = services[-1]
            rows.append(measure("in-process", lambda i: dialogue.open(
                dialogue_pb2.DialogueConfig(seed=i)), args.sessions, args.seconds, delay))
            for service in services:
                service.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait()

    print(f"\n{args.sessions} concurrent sessions x {args.seconds:g} s, frames of {FRAME_MS} ms,"
          f" model delay {delay} frame(s), torch threads {args.threads}, batch window "
          f"{'auto' if args.batch_window_ms is None else f'{args.batch_window_ms:g} ms'}")
    print(f"{'mode':<12}{'frames':>8}{'RTT p50 ms':>12}{'RTT p99 ms':>12}{'RTF':>8}")
    for r in rows:
        print(f"{r['mode']:<12}{r['frames']:>8}{r['p50']:>12.1f}{r['p99']:>12.1f}"
              f"{r['rtf']:>8.2f}")
    if len(rows) == 2:
        print(f"gRPC overhead: {rows[0]['p50'] - rows[1]['p50']:+.1f} ms p50, "
              f"{rows[0]['p99'] - rows[1]['p99']:+.1f} ms p99 per frame")
    print("server engines (gRPC run):")
    for e in figures.engines:
        print(f"  {e.name:<10} step p50 {e.step_ms_p50:6.1f} ms  p99 {e.step_ms_p99:6.1f} ms  "
              f"mean batch {e.mean_batch:4.2f}  steps {e.steps}")


if __name__ == "__main__":
    main()
