"""Soak: a real ``moshi-services serve`` process under mixed sessions for a given time, with
the slopes of its memory and thread count per minute (a leak shows as a steady slope).

    PYTHONPATH=. python3 bench/soak.py                          # 10 min, 8 mixed sessions, tiny
    PYTHONPATH=. python3 bench/soak.py --minutes 3 -n 8 --models null

**Sessions.** N client slots on ``grpc.aio`` (the clients of ``bench/bench_serving.py``: real
time ASR with markers, dialogue, TTS read like a player), taking asr, tts, dialogue in turn.
Each slot runs streams of ``--session-seconds`` back to back (a random length between half
and the whole, so their ends spread), each ended by cancelling the call: over a soak the
server opens and frees thousands of slots, which is where leaks would be. The server has
``--max-sessions`` N + 4, so a stream opened while its predecessor's slot is being freed
is not refused.

**Figures.** The server process is sampled from ``/proc`` every ``--sample-seconds``: resident
memory (RSS), threads, CPU. Printed per minute: streams ended, errors, RSS and threads at the
minute's end; then the least-squares slopes of RSS (MiB/min) and threads (per minute) over
the samples after the first minute (start-up and first allocations left out), and the totals.
A stream ends in error when the server ends it with any status but the client's own cancel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import math
import os
import random
import time
from collections.abc import Sequence

import grpc
import numpy as np

from bench.bench_serving import (
    FRAME_S,
    SESSIONS_PER_CHANNEL,
    STREAMS,
    ClientSettings,
    ProcSample,
    Server,
    StreamRecord,
    kinds_of,
    proc_sample,
)
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc

WARMUP_SECONDS = 60.0  # left out of the slopes


@dataclasses.dataclass
class Tally:
    """Streams that ended, by minute since the start, and the first errors seen."""

    ended: dict[int, int] = dataclasses.field(default_factory=dict)
    errors: dict[int, int] = dataclasses.field(default_factory=dict)
    first_errors: list[str] = dataclasses.field(default_factory=list)

    def count(self, minute: int, error: str | None) -> None:
        self.ended[minute] = self.ended.get(minute, 0) + 1
        if error is not None:
            self.errors[minute] = self.errors.get(minute, 0) + 1
            if len(self.first_errors) < 5:
                self.first_errors.append(error)


async def slot(kind: str, channel: grpc.aio.Channel, start: float, end: float,
               session_seconds: float, settings: ClientSettings, tally: Tally,
               rng: random.Random) -> None:
    """One client slot: streams of ``kind``, each cancelled after its length, until ``end``."""
    delay = start - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    while (now := time.perf_counter()) < end - 2 * FRAME_S:
        stop = min(end, now + session_seconds * rng.uniform(0.5, 1.0))
        record, error = StreamRecord(kind, now), None
        try:
            await STREAMS[kind](channel, record, stop, settings)
        except grpc.aio.AioRpcError as e:
            error = f"{kind}: {e.code().name}: {e.details()}"
        except RuntimeError as e:  # bench_serving's "the server ended the stream early"
            error = f"{kind}: {e}"
        tally.count(int((time.perf_counter() - start) // 60), error)
        if error is not None:
            await asyncio.sleep(1.0)  # do not spin on a failing server


async def sample(pid: int, end: float, every: float, samples: list[tuple[float, ProcSample]]
                 ) -> None:
    start = time.perf_counter()
    while (now := time.perf_counter()) < end:
        samples.append((now - start, proc_sample(pid)))
        await asyncio.sleep(min(every, max(0.0, end - now)))
    samples.append((time.perf_counter() - start, proc_sample(pid)))


async def soak(address: str, pid: int, kinds: list[str], seconds: float,
               session_seconds: float, every: float
               ) -> tuple[Tally, list[tuple[float, ProcSample]]]:
    channels = [grpc.aio.insecure_channel(address, options=[
        ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(math.ceil(len(kinds) / SESSIONS_PER_CHANNEL))]
    try:
        info = await dialogue_pb2_grpc.DialogueStub(channels[0]).GetInfo(
            dialogue_pb2.GetInfoRequest(), timeout=10) if "dialogue" in kinds else None
        delay = info.model_delay_frames if info is not None else 0
        begin = time.perf_counter() + 0.2
        end = begin + seconds
        tally, samples = Tally(), []
        sampler = asyncio.ensure_future(sample(pid, end, every, samples))
        tasks = [asyncio.ensure_future(slot(
            kind, channels[i % len(channels)], begin + FRAME_S * i / len(kinds), end,
            session_seconds, ClientSettings(seed=i, dialogue_delay=delay), tally,
            random.Random(i))) for i, kind in enumerate(kinds)]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
        await sampler
        return tally, samples
    finally:
        for channel in channels:
            await channel.close()


def slope_per_minute(samples: list[tuple[float, ProcSample]], field: str) -> float:
    """Least-squares slope of ``field`` per minute over the samples after WARMUP_SECONDS."""
    points = [(t, getattr(s, field)) for t, s in samples if t >= WARMUP_SECONDS]
    if len(points) < 3:
        return math.nan
    t, y = np.array(points, dtype=float).T
    return float(np.polyfit(t / 60, y, 1)[0])


def report(tally: Tally, samples: list[tuple[float, ProcSample]], seconds: float) -> None:
    print(f"{'minute':>6} {'streams':>7} {'errors':>6} {'RSS MiB':>8} {'threads':>7}")
    for minute in range(math.ceil(seconds / 60)):
        at = [s for t, s in samples if t <= (minute + 1) * 60] or [samples[0][1]]
        print(f"{minute + 1:>6} {tally.ended.get(minute, 0):>7} "
              f"{tally.errors.get(minute, 0):>6} {at[-1].rss_mib:>8.1f} {at[-1].threads:>7}")
    first, last = samples[0][1], samples[-1][1]
    cpu = last.cpu_seconds - first.cpu_seconds
    print(f"\nstreams {sum(tally.ended.values())}, errors {sum(tally.errors.values())}; "
          f"RSS {first.rss_mib:.0f} -> {last.rss_mib:.0f} MiB (peak "
          f"{max(s.rss_mib for _, s in samples):.0f}), slope "
          f"{slope_per_minute(samples, 'rss_mib'):+.2f} MiB/min after the first minute; "
          f"threads {first.threads} -> {last.threads} (peak "
          f"{max(s.threads for _, s in samples)}), slope "
          f"{slope_per_minute(samples, 'threads'):+.2f}/min; server CPU "
          f"{cpu / seconds:.2f} cores")
    for error in tally.first_errors:
        print("error:", error)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("-n", "--sessions", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--models", choices=("null", "tiny"), default="tiny")
    parser.add_argument("--session-seconds", type=float, default=10.0,
                        help="longest stream; each lasts between half and all of it")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--server-threads", type=int, default=None)
    args = parser.parse_args(argv)
    seconds = 60 * args.minutes
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores; soak of {args.minutes:g} min, {args.sessions} mixed "
          f"sessions on the {args.models} models, streams of "
          f"{args.session_seconds / 2:g}-{args.session_seconds:g} s\n", flush=True)
    server = Server(args.models, args.sessions + 4, args.server_threads)
    try:
        address = server.wait_serving()
        tally, samples = asyncio.run(soak(address, server.pid, kinds_of("mix", args.sessions),
                                          seconds, args.session_seconds, args.sample_seconds))
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    report(tally, samples, seconds)


if __name__ == "__main__":
    main()
