"""Concurrent ASR streams and TTS requests on the built-in tiny models, through a real gRPC
server in this process (port 0).

    PYTHONPATH=. python bench/bench_asr_tts.py                  # sessions 1, 2, 4, 8, 16
    PYTHONPATH=. python bench/bench_asr_tts.py -n 1 4 --seconds 8

For N sessions at once:
- ASR: each streams ``--seconds`` of noise as fast as the server takes it. Real-time factor =
  wall time / audio duration (below 1: N real-time streams keep up); time to first word =
  first word response after the stream opened; throughput = audio seconds processed per
  wall second, all sessions together.
- TTS: each synthesizes the same sentence (SynthesizeOnline). Time to first audio = first
  non-empty chunk; real-time factor = wall time / audio made per session; throughput =
  audio seconds made per wall second, all sessions together.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch

from services.asr import asr_pb2, asr_pb2_grpc
from services.core.common_pb2 import PCM_F32LE
from services.core.constants import FRAME_SIZE, SAMPLE_RATE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import ModelOptions, build_stt_service, build_tts_service

SENTENCE = ("The quick brown fox jumps over the lazy dog, then it runs back home "
            "before the evening rain starts.")


def concurrently(n: int, one) -> tuple[list, float]:
    results = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, one(i)))
               for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def asr_run(stub, n: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype("<f4")
             for _ in range(n)]
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=SAMPLE_RATE,
                                       interim_results=True)

    def one(i):
        def requests():
            yield asr_pb2.StreamingRecognizeRequest(config=config)
            for start in range(0, len(audio[i]), 4 * FRAME_SIZE):
                yield asr_pb2.StreamingRecognizeRequest(
                    audio=audio[i][start:start + 4 * FRAME_SIZE].tobytes())

        opened, first = time.perf_counter(), None
        for response in stub.StreamingRecognize(requests()):
            if first is None and response.HasField("word"):
                first = time.perf_counter() - opened
        return first

    firsts, wall = concurrently(n, one)
    firsts = [f for f in firsts if f is not None]
    return {"rtf": wall / seconds, "first_word_s": float(np.median(firsts)) if firsts
            else float("nan"), "throughput": n * seconds / wall}


def tts_run(stub, n: int) -> dict:
    def one(i):
        start, first, samples = time.perf_counter(), None, 0
        config = tts_pb2.SynthesisConfig(encoding=PCM_F32LE, seed=i)
        for chunk in stub.SynthesizeOnline(tts_pb2.SynthesizeRequest(config=config,
                                                                     text=SENTENCE)):
            if first is None and chunk.audio:
                first = time.perf_counter() - start
            samples += len(chunk.audio) // 4
        return first, samples / SAMPLE_RATE

    results, wall = concurrently(n, one)
    audio = float(np.mean([a for _, a in results]))
    return {"rtf": wall / audio, "first_audio_s": float(np.median([f for f, _ in results])),
            "throughput": n * audio / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sessions = max(args.n)
    asr, asr_codec = build_stt_service(ModelOptions(max_sessions=sessions))
    tts, tts_codec = build_tts_service(ModelOptions(max_sessions=sessions))
    services = [asr_codec, asr, tts_codec, tts]
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    asr_stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
    tts_stub = tts_pb2_grpc.SpeechSynthesisStub(channel)
    try:
        print(f"{'sessions':>8} | {'ASR rtf':>8} {'1st word s':>10} {'audio s/s':>9} | "
              f"{'TTS rtf':>8} {'1st audio s':>11} {'audio s/s':>9}")
        for n in args.n:
            a, t = asr_run(asr_stub, n, args.seconds), tts_run(tts_stub, n)
            print(f"{n:8d} | {a['rtf']:8.3f} {a['first_word_s']:10.3f} {a['throughput']:9.1f}"
                  f" | {t['rtf']:8.3f} {t['first_audio_s']:11.3f} {t['throughput']:9.1f}")
    finally:
        channel.close()
        server.stop(None)
        for service in services:
            service.close()


if __name__ == "__main__":
    main()
