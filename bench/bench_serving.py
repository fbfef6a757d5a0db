"""Serving overhead: what a real ``moshi-services serve`` process spends around its models
while N clients stream at real time.

    PYTHONPATH=. python3 bench/bench_serving.py                         # everything (~7 min)
    PYTHONPATH=. python3 bench/bench_serving.py --models null -n 1 64 --kinds asr mix
    PYTHONPATH=. python3 bench/bench_serving.py --seconds 4 --models tiny -n 16

**Server.** Each row starts its own server as a subprocess on 127.0.0.1, port 0 (the port is
read from what ``serve`` prints, readiness from gRPC health), with ``--max-sessions N`` and
the built-in models ``--builtin null`` (steps that cost next to nothing, so what is left is
the serving: gRPC, queues, threads, conversions, the engine's bookkeeping) or ``tiny`` (the
default stand-in models). ``--models floor`` rows run bench/transport_floor.py instead: the
ASR protocol answered with no engine behind it, the same messages each way, so its CPU per
session-frame is what grpc.aio and the event loop alone cost for this traffic (the floor
under the serving overhead, measured in the same run). Its CPU time is read from
``/proc/PID/stat`` (utime + stime), its thread count and resident memory from
``/proc/PID/status``, so only the server process is counted, never the clients.

**Clients.** N sessions in this process on ``grpc.aio`` (one event loop, a few channels),
each paced at real time: one 80 ms frame of audio is sent when it would have been recorded,
session starts spread over one frame. They use nothing but the protos:
- ``asr``: SpeechRecognition/StreamingRecognize; each frame is followed by a marker (every
  K-th frame with ``--marker-every K``: a client that only streams audio sends one message
  per frame, not two); the latency is the marker's round trip (sent -> acknowledged).
- ``dialogue``: Dialogue/Converse; latency of Moshi's frame j = its arrival - the time the
  user frame j + model_delay_frames (the last one it depends on) was sent.
- ``tts``: SpeechSynthesis/StreamingSynthesize with a long text; the client reads like a
  player: it never holds more than LEAD_SECONDS of audio beyond its real-time playhead, so the
  server is paced by flow control. Latency = how long each read waited for the chunk (about 0
  while the server keeps ahead, a frame's production time when it does not).
- ``mix``: sessions take asr, tts, dialogue in turn.
A stream that ends before the row does (a TTS text spoken to its end) is replaced by a new one.

**Figures** (over a window that skips the first WARMUP_FRACTION of the row, so session
set-up is not in them):
- CPU us / frame: server CPU time over the window / session-frames completed in it (an ASR
  frame acknowledged, a dialogue frame received, 80 ms of TTS audio received); "engine":
  the part of it spent on the engine threads (the ticks; the rest is gRPC and the event loop),
  told apart by the threads' OS names.
- p50 / p99 frame latency (ms), as defined per kind above.
- lag growth (ms/s): each stream's lag = wall time since it started - audio the server has
  handled for it (acknowledged, answered or received); the least-squares slope of lag over the
  window, the worst stream shown. About 0: real time; > 0: the session falls behind by that
  many ms per second. "behind" is the worst lag at the end of the window minus its start.
- slip (ms): how late a client sent a frame against its real-time schedule (p99). Either the
  client process was short of CPU (it shares the machine) or the server pushed back (a write
  waits while the server takes no input); lag counts from the ideal schedule either way.
- threads and RSS of the server at the start of the row (idle, warmed up) and at peak.
- ticks/s and batch: the engines' batched steps per second over the window and the sessions
  stepped per step (frames / steps), from the server's EngineStats/GetStats at both ends of
  the window, summed over its engines. At real time, 12.5 ticks/s is one tick per frame
  period; more means the sessions' frames were stepped in several smaller batches.

Every row stops by itself (``--seconds``, default 10), traffic stays on loopback. The machine's
read bandwidth and GEMM peak are printed first (bench/roofline.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.asr import asr_pb2, asr_pb2_grpc
from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_S16LE
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.tts import tts_pb2, tts_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 24_000
FRAME = 1920  # samples per 80 ms frame (services.core.constants; repeated: protos only here)
FRAME_S = FRAME / SAMPLE_RATE
KINDS = ("asr", "tts", "dialogue")
WARMUP_FRACTION = 0.2  # of a row, left out of the figures (session set-up, first delays)
LEAD_SECONDS = 0.4  # audio a TTS client reads ahead of its playhead
SESSIONS_PER_CHANNEL = 32  # one HTTP/2 connection per this many sessions
STARTUP_TIMEOUT = 120.0  # seconds for a server to load and warm up
CLK_TCK = os.sysconf("SC_CLK_TCK")
TEXT = " ".join(["The quick brown fox jumps over the lazy dog while the evening rain "
                 "falls on the quiet town, and everyone walks home slowly."] * 20)


# ---- the server process ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProcSample:
    cpu_seconds: float  # utime + stime of the whole process
    threads: int
    rss_mib: float
    engine_cpu_seconds: float = 0.0  # of its engine threads (named "engine-...") alone


def _name_and_cpu_ticks(stat: Path) -> tuple[str, int]:
    """(command name, utime + stime in clock ticks) of a /proc/.../stat file. The name (field
    2) may hold spaces and parentheses, so the fields are split after its last ")"."""
    name, rest = stat.read_text().split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return name, int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def proc_sample(pid: int) -> ProcSample:
    _, ticks = _name_and_cpu_ticks(Path(f"/proc/{pid}/stat"))
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ProcSample(ticks / CLK_TCK, int(status["Threads"]),
                      int(status["VmRSS"].split()[0]) / 1024, engine_cpu_seconds(pid))


def engine_cpu_seconds(pid: int) -> float:
    """CPU time of the process's engine threads (the tick), from /proc/PID/task/*/stat; the
    rest of the process is the serving around it (gRPC, the event loop)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, ticks = _name_and_cpu_ticks(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith("engine-"):
            total += ticks
    return total / CLK_TCK


class Server:
    """``moshi-services serve`` in a subprocess, until ``stop``."""

    def __init__(self, models: str, max_sessions: int, threads: int | None,
                 extra_args: Sequence[str] = ()):
        if models == "floor":  # the protocol with no engine: bench/transport_floor.py
            command = ["-m", "bench.transport_floor", "--port", "0"]
        else:
            command = ["-c", "from cli.main import main; main()", "serve", "--host",
                       "127.0.0.1", "--port", "0", "--max-sessions", str(max_sessions),
                       "--builtin", models, "--grace", "0.5", *extra_args]
            if threads:
                command += ["--threads", str(threads)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, *command], cwd=ROOT,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._port: int | None = None
        self._port_seen = threading.Event()
        # Drain stderr on a thread: an unread pipe would block the server once full.
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log = [*self.log[-40:], line.rstrip()]
            if self._port is None and (m := re.search(r"listening on \S+:(\d+)", line)):
                self._port = int(m.group(1))
                self._port_seen.set()
        self._port_seen.set()  # the process ended

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_serving(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """The server's address once its health says SERVING."""
        deadline = time.monotonic() + timeout
        self._port_seen.wait(timeout)
        if self._port is None:
            raise RuntimeError("the server did not say its port:\n" + "\n".join(self.log))
        address = f"127.0.0.1:{self._port}"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("the server exited:\n" + "\n".join(self.log))
                with contextlib.suppress(grpc.RpcError):
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return address
                time.sleep(0.2)
        raise RuntimeError(f"the server was not SERVING after {timeout:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- one stream's record -----------------------------------------------------------------------


@dataclasses.dataclass
class StreamRecord:
    """What one stream saw; times are time.perf_counter() seconds."""

    kind: str
    start: float
    done: list[float] = dataclasses.field(default_factory=list)  # completion of each frame
    latency: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (t, s)
    progress: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (t, audio s)
    slip: list[float] = dataclasses.field(default_factory=list)  # send lateness, s
    error: str | None = None

    def frames_done(self, t: float, frames: float = 1.0) -> None:
        self.done += [t] * max(1, round(frames))


def _in(window: tuple[float, float], t: float) -> bool:
    return window[0] <= t <= window[1]


def lag_slope(record: StreamRecord, window: tuple[float, float]) -> tuple[float, float] | None:
    """(slope in s/s, lag change over the window in s) of lag = (t - start) - audio handled;
    None with too few points to say."""
    points = [(t, (t - record.start) - audio) for t, audio in record.progress if _in(window, t)]
    if len(points) < 5 or points[-1][0] - points[0][0] < 0.5:
        return None
    t, lag = np.array(points).T
    slope = float(np.polyfit(t - t[0], lag, 1)[0])
    return slope, float(lag[-1] - lag[0])


# ---- the sessions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Sampling is left to the server's defaults (greedy for the null model)."""

    seed: int
    dialogue_delay: int  # DialogueInfo.model_delay_frames
    marker_every: int = 1  # ASR: a marker after every this many frames


def _audio_frames(seed: int, frames: int = 50) -> list[bytes]:
    """A few seconds of quiet noise as s16le frames, looped by the senders."""
    rng = np.random.default_rng(seed)
    pcm = (0.1 * 32767 * rng.standard_normal(frames * FRAME)).astype("<i2")
    return [pcm[i * FRAME:(i + 1) * FRAME].tobytes() for i in range(frames)]


async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _paced_frames(record: StreamRecord, end: float, frames: list[bytes],
                        send: Callable[[int, bytes], Awaitable[None]],
                        sent: dict[int, float]) -> None:
    """Sends frame k when it is complete in real time (start + (k + 1) * 80 ms) until ``end``."""
    k = 0
    while True:
        due = record.start + (k + 1) * FRAME_S
        if due > end:
            return
        await _sleep_until(due)
        now = time.perf_counter()
        record.slip.append(now - due)
        sent[k] = now
        await send(k, frames[k % len(frames)])
        k += 1


async def asr_stream(channel: grpc.aio.Channel, record: StreamRecord, end: float,
                     settings: ClientSettings) -> None:
    stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
    call = stub.StreamingRecognize()
    config = asr_pb2.RecognitionConfig(encoding=PCM_S16LE, sample_rate_hertz=SAMPLE_RATE,
                                       seed=settings.seed)
    await call.write(asr_pb2.StreamingRecognizeRequest(config=config))
    sent: dict[int, float] = {}

    every = settings.marker_every

    async def send(k: int, frame: bytes) -> None:
        await call.write(asr_pb2.StreamingRecognizeRequest(audio=frame))
        if (k + 1) % every == 0:
            await call.write(asr_pb2.StreamingRecognizeRequest(marker=asr_pb2.Marker(id=k)))

    async def receive() -> None:
        async for response in call:
            if response.WhichOneof("event") == "marker":
                k, now = response.marker.id, time.perf_counter()
                record.frames_done(now, every)  # the frames since the previous marker
                record.latency.append((now, now - sent[k]))
                record.progress.append((now, (k + 1) * FRAME_S))

    await _run_paced(call, record, end, send, receive, sent, settings.seed)


async def dialogue_stream(channel: grpc.aio.Channel, record: StreamRecord, end: float,
                          settings: ClientSettings) -> None:
    stub = dialogue_pb2_grpc.DialogueStub(channel)
    call = stub.Converse()
    config = dialogue_pb2.DialogueConfig(
        input_encoding=PCM_S16LE, input_sample_rate_hertz=SAMPLE_RATE,
        output_encoding=PCM_S16LE, seed=settings.seed)
    await call.write(dialogue_pb2.ConverseRequest(config=config))
    sent: dict[int, float] = {}
    delay = settings.dialogue_delay

    async def send(_k: int, frame: bytes) -> None:
        await call.write(dialogue_pb2.ConverseRequest(audio=frame))

    async def receive() -> None:
        async for response in call:
            now, last_input = time.perf_counter(), response.frame_index + delay
            record.frames_done(now)
            if last_input in sent:
                record.latency.append((now, now - sent[last_input]))
            record.progress.append((now, (last_input + 1) * FRAME_S))

    await _run_paced(call, record, end, send, receive, sent, settings.seed)


async def _run_paced(call, record: StreamRecord, end: float,
                     send: Callable[[int, bytes], Awaitable[None]],
                     receive: Callable[[], Awaitable[None]], sent: dict[int, float],
                     seed: int) -> None:
    """Paced sending and receiving together until ``end``; then the call is cancelled (not
    half-closed: the flush of a finished input is not what is measured)."""
    receiver = asyncio.ensure_future(receive())
    try:
        sender = asyncio.ensure_future(_paced_frames(record, end, _audio_frames(seed), send,
                                                     sent))
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a failed call raises here
        if receiver in done:
            raise RuntimeError("the server ended the stream early")
    finally:
        call.cancel()
        for task in (receiver,):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await task


async def tts_stream(channel: grpc.aio.Channel, record: StreamRecord, end: float,
                     settings: ClientSettings) -> None:
    stub = tts_pb2_grpc.SpeechSynthesisStub(channel)
    config = tts_pb2.SynthesisConfig(encoding=PCM_S16LE, seed=settings.seed)
    requests = [tts_pb2.StreamingSynthesizeRequest(config=config),
                tts_pb2.StreamingSynthesizeRequest(text=TEXT),
                tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())]
    call = stub.StreamingSynthesize(iter(requests))
    first: float | None = None
    received = 0.0  # seconds of audio
    try:
        while True:
            asked = time.perf_counter()
            if asked > end:
                return
            chunk = await call.read()
            if chunk is grpc.aio.EOF:
                return  # the text is spoken: the caller opens another stream
            now = time.perf_counter()
            seconds = len(chunk.audio) / 2 / SAMPLE_RATE
            if not seconds:
                continue
            if first is None:
                first = now
                record.start = now  # lag counts from the first audio (the delay is not lag)
            else:
                record.latency.append((now, now - asked))
            received += seconds
            record.frames_done(now, seconds / FRAME_S)
            record.progress.append((now, received))
            # Like a player: hold at most LEAD_SECONDS beyond the real-time playhead.
            await _sleep_until(first + received - LEAD_SECONDS)
    finally:
        call.cancel()


STREAMS = {"asr": asr_stream, "tts": tts_stream, "dialogue": dialogue_stream}


async def session(kind: str, channel: grpc.aio.Channel, start: float, end: float,
                  settings: ClientSettings, records: list[StreamRecord]) -> None:
    """One client slot: streams of ``kind`` back to back from ``start`` until ``end``."""
    await _sleep_until(start)
    while time.perf_counter() < end - 2 * FRAME_S:
        record = StreamRecord(kind, time.perf_counter())
        records.append(record)
        try:
            await STREAMS[kind](channel, record, end, settings)
        except grpc.aio.AioRpcError as e:
            record.error = f"{e.code().name}: {e.details()}"
            return
        except RuntimeError as e:
            record.error = str(e)
            return


# ---- one row -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    models: str
    kind: str
    sessions: int
    frames: int
    cpu_us_per_frame: float
    server_cores: float  # server CPU seconds per wall second over the window
    client_cores: float
    p50_ms: float
    p99_ms: float
    lag_ms_per_s: float  # worst stream
    behind_ms: float  # worst stream's lag change over the window
    slip_p99_ms: float
    threads_start: int
    threads_peak: int
    rss_start_mib: float
    rss_peak_mib: float
    errors: int
    first_error: str | None
    ticks_per_s: float = math.nan  # engine steps per second over the window
    mean_batch: float = math.nan  # session frames per engine step over the window
    engine_us_per_frame: float = math.nan  # the engine threads' share of cpu_us_per_frame


def kinds_of(kind: str, n: int) -> list[str]:
    return [KINDS[i % 3] for i in range(n)] if kind == "mix" else [kind] * n


async def _drive(address: str, kinds: list[str], seconds: float, pid: int,
                 marker_every: int = 1
                 ) -> tuple[list[StreamRecord], tuple[float, float], list[ProcSample],
                            tuple[float, float], tuple[float, float]]:
    """Runs the sessions; returns their records, the window, server samples (first at the
    window start, last at its end, peaks in between), client CPU seconds at both ends and
    the engines' (ticks per second, mean batch) over the window."""
    channels = [grpc.aio.insecure_channel(address, options=[
        ("grpc.use_local_subchannel_pool", 1)])  # its own connection, not a shared one
        for _ in range(math.ceil(len(kinds) / SESSIONS_PER_CHANNEL))]
    try:
        info = await dialogue_pb2_grpc.DialogueStub(channels[0]).GetInfo(
            dialogue_pb2.GetInfoRequest(), timeout=10) if "dialogue" in kinds else None
        delay = info.model_delay_frames if info is not None else 0
        begin = time.perf_counter() + 0.2
        end = begin + seconds
        window = (begin + WARMUP_FRACTION * seconds, end - FRAME_S)
        records: list[StreamRecord] = []
        tasks = [asyncio.ensure_future(session(
            kind, channels[i % len(channels)], begin + FRAME_S * i / len(kinds), end,
            ClientSettings(seed=i, dialogue_delay=delay, marker_every=marker_every), records))
            for i, kind in enumerate(kinds)]
        counts_start = asyncio.ensure_future(_engine_counts(channels[0], window[0]))
        samples, client = await _sample_server(pid, window)
        start, end_counts = await counts_start, await _engine_counts(channels[0])
        steps, frames = end_counts[0] - start[0], end_counts[1] - start[1]
        ticks = (steps / (window[1] - window[0]), frames / steps if steps else math.nan)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
        return records, window, samples, client, ticks
    finally:
        for channel in channels:
            await channel.close()


async def _engine_counts(channel: grpc.aio.Channel, at: float | None = None
                         ) -> tuple[int, int]:
    """(steps, frames) of all the server's engines since it started, read at time ``at``
    (perf_counter; None: now) from EngineStats/GetStats."""
    if at is not None:
        await _sleep_until(at)
    reply = await stats_pb2_grpc.EngineStatsStub(channel).GetStats(
        stats_pb2.GetStatsRequest(), timeout=10)
    return sum(e.steps for e in reply.engines), sum(e.frames for e in reply.engines)


async def _sample_server(pid: int, window: tuple[float, float]
                         ) -> tuple[list[ProcSample], tuple[float, float]]:
    await _sleep_until(window[0])
    samples, client_start = [proc_sample(pid)], time.process_time()
    while time.perf_counter() < window[1]:
        await asyncio.sleep(min(0.2, max(0.0, window[1] - time.perf_counter())))
        samples.append(proc_sample(pid))
    return samples, (client_start, time.process_time())


def run_row(models: str, kind: str, n: int, seconds: float, threads: int | None,
            serve_args: Sequence[str] = (), marker_every: int = 1) -> Row:
    server = Server(models, n, threads, serve_args)
    try:
        address = server.wait_serving()
        idle = proc_sample(server.pid)
        records, window, samples, client, ticks = asyncio.run(
            _drive(address, kinds_of(kind, n), seconds, server.pid, marker_every))
    finally:
        server.stop()
    return summarize(models, kind, n, records, window, idle, samples, client, ticks)


def summarize(models: str, kind: str, n: int, records: list[StreamRecord],
              window: tuple[float, float], idle: ProcSample, samples: list[ProcSample],
              client: tuple[float, float],
              ticks: tuple[float, float] = (math.nan, math.nan)) -> Row:
    frames = sum(1 for r in records for t in r.done if _in(window, t))
    wall = window[1] - window[0]
    cpu = samples[-1].cpu_seconds - samples[0].cpu_seconds
    engine_cpu = samples[-1].engine_cpu_seconds - samples[0].engine_cpu_seconds
    latencies = [s for r in records for t, s in r.latency if _in(window, t)]
    slopes = [s for r in records if (s := lag_slope(r, window)) is not None]
    slips = [s for r in records for s in r.slip]
    errors = [r.error for r in records if r.error]
    pct = (lambda q: 1000 * float(np.percentile(latencies, q))) if latencies \
        else (lambda q: math.nan)
    return Row(
        models, kind, n, frames, 1e6 * cpu / frames if frames else math.nan, cpu / wall,
        (client[1] - client[0]) / wall, pct(50), pct(99),
        1000 * max((s for s, _ in slopes), default=math.nan),
        1000 * max((b for _, b in slopes), default=math.nan),
        1000 * float(np.percentile(slips, 99)) if slips else math.nan,
        idle.threads, max(s.threads for s in [idle, *samples]), idle.rss_mib,
        max(s.rss_mib for s in [idle, *samples]), len(errors), errors[0] if errors else None,
        *ticks, 1e6 * engine_cpu / frames if frames else math.nan)


# ---- the table ---------------------------------------------------------------------------------

HEADER = (f"{'models':<6} {'kind':<8} {'N':>4} {'frames':>7} {'CPU us/fr':>9} {'engine':>6}"
          f" {'srv cores':>9}"
          f" {'p50 ms':>7} {'p99 ms':>7} {'lag ms/s':>8} {'behind ms':>9} {'slip ms':>7}"
          f" {'threads':>9} {'RSS MiB':>11} {'cli cores':>9} {'ticks/s':>7} {'batch':>5}"
          f" {'err':>3}")


def format_row(r: Row) -> str:
    return (f"{r.models:<6} {r.kind:<8} {r.sessions:>4} {r.frames:>7} {r.cpu_us_per_frame:>9.0f}"
            f" {r.engine_us_per_frame:>6.0f} {r.server_cores:>9.2f} {r.p50_ms:>7.1f}"
            f" {r.p99_ms:>7.1f} {r.lag_ms_per_s:>8.1f}"
            f" {r.behind_ms:>9.0f} {r.slip_p99_ms:>7.1f}"
            f" {f'{r.threads_start}/{r.threads_peak}':>9}"
            f" {f'{r.rss_start_mib:.0f}/{r.rss_peak_mib:.0f}':>11} {r.client_cores:>9.2f}"
            f" {r.ticks_per_s:>7.1f} {r.mean_batch:>5.1f} {r.errors:>3}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=("floor", "null", "tiny"),
                        default=["floor", "null", "tiny"],
                        help="floor: the ASR protocol with no engine (bench/transport_floor.py:"
                        " asr rows only)")
    parser.add_argument("-n", "--sessions", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--kinds", nargs="+", choices=(*KINDS, "mix"),
                        default=[*KINDS, "mix"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each row")
    parser.add_argument("--marker-every", type=int, default=1, metavar="K",
                        help="ASR clients send a marker after every K frames (default 1: "
                        "every frame; 12: about one latency probe a second)")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="the server's torch intra-op threads (default: serve's default)")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra argument for serve (repeatable), e.g. "
                        "--serve-arg=--batch-window-ms=5")
    args = parser.parse_args(argv)
    import torch  # here, not for the clients

    from bench.roofline import measure

    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores; {measure((torch.float32,)).describe()}")
    print(f"rows of {args.seconds:g} s, ASR marker every {args.marker_every} frame(s), "
          f"figures over the last "
          f"{1 - WARMUP_FRACTION:.0%}; threads and RSS: at start / peak\n")
    print(HEADER, flush=True)
    failures = []
    for models in args.models:
        for n in args.sessions:
            for kind in (["asr"] if models == "floor" else args.kinds):
                row = run_row(models, kind, n, args.seconds, args.server_threads,
                              args.serve_arg, args.marker_every)
                print(format_row(row), flush=True)
                if row.first_error:
                    failures.append(f"{models} {kind} N={n}: {row.first_error}")
    for failure in failures:
        print("error:", failure)


if __name__ == "__main__":
    main()
