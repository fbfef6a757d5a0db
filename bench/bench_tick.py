"""The engine's tick in process: CPU time of one ``SpeechStepper.step`` over B recognition
sessions on the Moshi layout (Mimi encode, one temporal step, the text sampling; no depformer:
no recognition row uses the sampled audio, see ``Mode.uses_sampled_audio``), without any
serving around it.

    PYTHONPATH=. python3 bench/bench_tick.py                        # null and tiny, B 1 16 64
    PYTHONPATH=. python3 bench/bench_tick.py --presets tiny -b 64 --repeats 5

Per row: CPU ms per tick (``time.process_time`` of this process, torch on ``--threads``
threads, 1 by default like one engine thread next to the gRPC loop), the best of
``--repeats`` runs of ``--ticks`` ticks each (on a shared machine the slower runs measure the
other jobs) and their median; us per session-row; kernels per tick (torch operator calls,
counted once with a dispatch mode: a figure free of the machine's noise, and most of the fixed
cost of a tick with small models); GEMM GFLOP per tick (torch's flop counter: matmuls,
convolutions, attention) and the fraction of the GEMM peak the best run reaches
(bench/roofline.py). The ``null`` preset's tick is almost all fixed cost; ``tiny``'s grows with
B (the SEANet encoder, top-k sampling over 2048 codes).

Sessions sample (text top-k 25, audio top-k 250, each its own seed), like the ASR service's
defaults on a Moshi-layout LM.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from bench.roofline import measure
from services.asr.mode import RecognitionMode
from services.builtin import BuiltinTokenizer
from services.core.tick import SpeechStepper
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.wiring import ModelOptions, load_lm_model, load_mimi_model, set_threads

TEXT_DELAY_FRAMES = 25  # the ASR service's default on a Moshi-layout LM (2 s)


class _KernelCount(TorchDispatchMode):
    """Counts the operator calls that reach torch's dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _stepper(preset: str, batch: int) -> tuple[SpeechStepper, list[np.ndarray]]:
    options = ModelOptions(builtin_preset=preset)
    model, _, _ = load_lm_model(options)
    codec = load_mimi_model(options)
    stepper = SpeechStepper(batch, LMGenerator(model), codec, max_delay=TEXT_DELAY_FRAMES + 5)
    tokenizer = BuiltinTokenizer()
    modes = [RecognitionMode.for_moshi(model.cfg, TEXT_DELAY_FRAMES, tokenizer.decode,
                                       SamplingSettings(seed=i)) for i in range(batch)]
    stepper.start(list(range(batch)), modes)
    rng = np.random.default_rng(0)
    return stepper, [(0.1 * rng.standard_normal(1920)).astype(np.float32)
                     for _ in range(batch)]


def run_row(preset: str, batch: int, ticks: int, repeats: int) -> dict[str, float]:
    stepper, pcm = _stepper(preset, batch)
    slots = list(range(batch))
    with torch.inference_mode():
        for _ in range(5):  # warm-up: allocator, oneDNN / MKL kernels
            stepper.step(slots, pcm)
        counter = _KernelCount()
        with counter:
            stepper.step(slots, pcm)
        flops = FlopCounterMode(display=False)
        with flops:
            stepper.step(slots, pcm)
        runs = []
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(ticks):
                stepper.step(slots, pcm)
            runs.append((time.process_time() - start) / ticks)
    return {"best_ms": 1e3 * min(runs), "median_ms": 1e3 * statistics.median(runs),
            "kernels": sum(counter.calls.values()), "gflop": flops.get_total_flops() / 1e9}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", choices=("null", "tiny"),
                        default=["null", "tiny"])
    parser.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--ticks", type=int, default=40, help="ticks per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    roofline = measure((torch.float32,))
    peak = roofline.gemm_gflops[torch.float32]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores; {roofline.describe()}")
    print(f"best of {args.repeats} runs of {args.ticks} ticks (median in brackets)\n")
    print(f"{'preset':<6} {'B':>4} {'CPU ms/tick':>18} {'us/row':>7} {'kernels':>8}"
          f" {'GFLOP':>7} {'of peak':>7}")
    for preset in args.presets:
        for batch in args.batch:
            r = run_row(preset, batch, args.ticks, args.repeats)
            fraction = r["gflop"] / peak / (r["best_ms"] / 1e3)
            timing = f"{r['best_ms']:.2f} ({r['median_ms']:.2f})"
            print(f"{preset:<6} {batch:>4} {timing:>18} {1e3 * r['best_ms'] / batch:>7.0f}"
                  f" {r['kernels']:>8} {r['gflop']:>7.3f} {fraction:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
