"""Kyutai STT-1B through the ASR service, end to end: N streams of audio into a real gRPC
server in this process (127.0.0.1, port 0), as fast as it takes them.

    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python3 bench/bench_stt_service.py        # N 1 2 4
    PYTHONPATH=. python3 bench/bench_stt_service.py -n 1 --seconds 6 --quantize int8-weight

The models have the real shapes with random weights (no download): the STT-1B LM
(``stt_1b_en_fr``: dim 2048, 16 layers, 32 audio codebooks in, greedy) with int8 weights by
default, and the full Mimi (``mimi_202407``) encoder, on one engine exactly as ``serve`` builds
it for a Kyutai STT checkpoint (``wiring.engine_for`` + ``ASRService.on_stt``). Each stream
sends ``--seconds`` of quiet noise in 320 ms chunks (PCM float32) and reads every response.

Per N: real-time factor = wall time / audio seconds of one stream (below 1: N streams keep up
with real time; the issue's target is <= 0.8 at one stream), throughput = audio seconds per
wall second over all streams, and the engine's mean step time over the row (from its stats:
the tick, Mimi encode and LM step of every stream that has a frame) with the
fraction of the bandwidth limit it reaches: the bytes a step reads (LM weights in their
stored format, its KV ring, the Mimi weights) over the read bandwidth measured at start
(bench/roofline.py). The largest N with a real-time factor <= 1 is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
from collections.abc import Iterator, Sequence

import torch

from bench.bench_asr_tts import asr_run
from bench.bench_lm import SHAPES, random_model, step_gbytes
from bench.roofline import measure
from services import builtin
from services.asr import asr_pb2_grpc
from services.asr.service import ASRService
from services.builtin import BuiltinTokenizer
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.mimi import build_random_mimi
from services.mimi.model import MimiModel
from services.moshi_lm.model import LMModel
from services.moshi_lm.quantize import QUANTIZE_MODES
from services.wiring import ModelOptions, engine_for, lm_generator


def mimi_gbytes(mimi: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in mimi.parameters()) / 1e9


@dataclasses.dataclass(frozen=True)
class Row:
    streams: int
    rtf: float  # wall time / audio seconds of one stream
    throughput: float  # audio seconds per wall second, all streams
    step_ms: float  # the engine's mean step over the row
    gbytes: float  # read per step: LM weights as stored, its KV ring, Mimi's weights
    gbps: float
    fraction: float  # gbps / the machine's read bandwidth


def models(shape: str, quantize: str | None, dtype: torch.dtype = torch.bfloat16
           ) -> tuple[LMModel, MimiModel]:
    """``stt_1b``: the real shapes, random weights; ``builtin``: the built-in tiny STT model
    and tiny Mimi (for tests of this benchmark). ``dtype``: the LM's compute dtype (its
    activations and KV ring; the weights are int8 when ``quantize`` says so)."""
    if shape == "builtin":
        model = builtin.builtin_stt(dtype=dtype, quantize=quantize)
        return model, builtin.builtin_mimi(num_codebooks=model.cfg.num_input_codebooks)
    cfg, _ = SHAPES[shape]
    model = random_model(cfg, dtype, quantize)
    return model, build_random_mimi("mimi_202407", seed=0,
                                    num_codebooks=cfg.num_input_codebooks)


def run(model: LMModel, mimi: MimiModel, streams: Sequence[int], seconds: float,
        read_gbps: float, kv_dtype: str | None = None) -> Iterator[Row]:
    """One row per entry of ``streams``, on one engine and server for them all;
    ``kv_dtype``: the LM's KV ring (None: its compute dtype)."""
    cfg = model.cfg
    options = ModelOptions(max_sessions=max(streams), kv_dtype=kv_dtype)
    generator = lm_generator(model, options)
    engine = engine_for(options, generator, mimi)
    asr = ASRService.on_stt(engine, cfg, BuiltinTokenizer(cfg.text_vocab).decode, "random")
    server, port = create_server([asr], "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
    try:
        asr.warm_up()
        for n in streams:
            before = engine.stats()
            result = asr_run(stub, n, seconds)
            after = engine.stats()
            step_ms = (after.step_ms_sum - before.step_ms_sum) / (after.steps - before.steps)
            gbytes = step_gbytes(model, generator.init_state(n)) + mimi_gbytes(mimi)
            gbps = gbytes / (step_ms / 1e3)
            yield Row(n, result["rtf"], result["throughput"], step_ms, gbytes, gbps,
                      gbps / read_gbps)
    finally:
        channel.close()
        server.stop(None)
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per stream")
    parser.add_argument("--quantize", choices=(*QUANTIZE_MODES, "none"), default="int8")
    parser.add_argument("--shape", choices=("stt_1b", "builtin"), default="stt_1b")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="the LM's compute dtype (float32: faster attention on CPUs "
                        "without bf16 instructions, twice the KV-ring bytes)")
    parser.add_argument("--kv-dtype", choices=("bfloat16", "float32"), default=None,
                        help="the LM's KV ring (default: --dtype); bfloat16 beside float32 "
                        "compute halves the bytes attention reads")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    roofline = measure((torch.float32,))
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
          f"{roofline.describe()}")
    model, mimi = models(args.shape, None if args.quantize == "none" else args.quantize,
                         getattr(torch, args.dtype))
    print(f"{args.shape} LM ({args.quantize} weights, {args.dtype} compute, "
          f"{args.kv_dtype or args.dtype} KV ring) + Mimi encoder "
          "(fp32), "
          f"{args.seconds:g} s of audio per stream\n")
    print(f"{'streams':>7} {'RTF':>6} {'audio s/s':>9} {'step ms':>8} {'GB read':>7}"
          f" {'GB/s':>6} {'fraction':>8}")
    best = 0
    for row in run(model, mimi, args.n, args.seconds, roofline.read_gbps, args.kv_dtype):
        print(f"{row.streams:7d} {row.rtf:6.2f} {row.throughput:9.2f} {row.step_ms:8.1f}"
              f" {row.gbytes:7.2f} {row.gbps:6.1f} {row.fraction:8.2f}", flush=True)
        if row.rtf <= 1.0:
            best = max(best, row.streams)
    print(f"\nlargest N with real-time factor <= 1: {best or 'none of those run'}")


if __name__ == "__main__":
    main()
