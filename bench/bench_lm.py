"""Moshi LM streaming step on CPU: ms per step, and peak memory of loading a checkpoint.

    PYTHONPATH=. python bench/bench_lm.py                       # everything (a few minutes)
    PYTHONPATH=. python bench/bench_lm.py --shapes small --batches 1 4
    PYTHONPATH=. python bench/bench_lm.py --shapes stt_1b --modes bfloat16 int8 --no-memory

Shapes (random weights, 2 threads):
- small:  dim 256, 4 layers, 8 heads, text vocab 32000, 16 codebooks, 8-step depformer
          (dim 128, 2 layers), Moshi delays; sampled (text 0.7/25, audio 0.8/250).
- stt_1b: Kyutai STT 1B (dim 2048, 16 layers, 16 heads, text_card 8000, n_q 32, dep_q 0,
          context 750); greedy, as its lm_gen_config.
- moshi_7b: Moshi 7B (bf16 weights alone are 15 GB: on request only); sampled.
Modes: float32, bfloat16 (compute dtype), int8 (``load_lm(quantize="int8")``: dynamic int8
for the temporal transformer and text head, bf16 elsewhere) and int8-weight (int8 weights,
bf16 activations: this project's weight-only kernel on CPU when it builds); int8-weight-fp32
and int8-fp32 are int8-weight and int8 with float32 activations and KV ring.

Each timing runs WARMUP steps, then the median of STEPS steps (the CPU is often shared: the
median resists other jobs' bursts). On a CPU shared with other jobs, two OpenMP threads that
spin-wait for each other lose badly (5-10x here); run with OMP_WAIT_POLICY=PASSIVE there, or
compare with --threads 1.

Roofline: the machine's read bandwidth and GEMM peak are measured at start (bench/roofline.py);
each cell gives ms, the GB/s of weights and KV ring read per step (the embedding tables are
not counted: a step reads one row of each) and the fraction of the limit
max(bytes / bandwidth, flops / peak); int8 rows by bandwidth alone (their products are not
the bf16 GEMM whose peak is measured: fp32 FMAs or int8 ones). At small batch the step is
bound by bandwidth, so B=4 should cost little more than B=1 except for its larger KV ring.
The README's "Speed" section has the dated tables; times drift by up to 2x between days, the
fractions much less.

``--stt-streams 1 2 4`` adds Mimi encode_step + STT-1B step (``--stt-mode``, int8 by default)
per 80 ms frame at that many streams (``stt_frame_times`` takes the model objects, so it
measures loaded models as well).

Every step is timed with a full KV ring (``fill_ring``: a session past its attention window,
the steady state of a long session): attention may skip the empty slots, so a few steps of a
fresh session would time it on a nearly empty ring. ``--fresh-ring`` times the first steps of
fresh sessions instead.

Memory: a checkpoint of the shape is written (bf16, as Kyutai ships them) and loaded in a
fresh process; the table gives the process's peak RSS growth during load_lm (peak RSS minus
RSS before) against the checkpoint's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.roofline import Roofline, measure
from services.core.checkpoint import build_on_meta, save_state_dict
from services.core.constants import FRAME_MS
from services.mimi import build_random_mimi
from services.mimi.model import MimiModel
from services.moshi_lm.config import LMConfig, preset
from services.moshi_lm.generate import LMGenerator, LMState, SamplingSettings
from services.moshi_lm.loader import load_lm, prepare_for_inference
from services.moshi_lm.model import LMModel, LowRankEmbedding, TokenEmbedding
from services.moshi_lm.quantize import (
    BlockedInt8Weight,
    DynamicInt8Weight,
    Int8Weight,
    PackedWeight,
)

SHAPES = {
    "small": (dataclasses.replace(
        preset("moshi_7b"), dim=256, num_heads=8, num_layers=4, depformer_dim=128,
        depformer_num_heads=4, depformer_num_layers=2, depformer_dim_feedforward=None),
        SamplingSettings()),
    "stt_1b": (preset("stt_1b_en_fr"), SamplingSettings.greedy()),
    # Moshi 7B: 15 GB of bf16 weights; only when asked for (--shapes moshi_7b --modes bfloat16).
    "moshi_7b": (preset("moshi_7b"), SamplingSettings()),
}
DEFAULT_SHAPES = ["small", "stt_1b"]
MODES = {"float32": (torch.float32, None), "bfloat16": (torch.bfloat16, None),
         "int8": (torch.bfloat16, "int8"), "int8-weight": (torch.bfloat16, "int8-weight"),
         # float32 activations and KV ring: on CPUs without bf16 arithmetic (AVX2 only) torch's
         # bf16 attention is far slower than fp32, which doubles the ring's bytes instead
         "int8-weight-fp32": (torch.float32, "int8-weight"),
         "int8-fp32": (torch.float32, "int8")}
# The fp32-compute modes with a bf16 KV ring (LMGenerator kv_dtype): half the bytes attention
# reads.
RING_DTYPES = {f"{mode}-kv16": torch.bfloat16 for mode in ("int8-weight-fp32", "int8-fp32")}
MODES.update({mode: MODES[mode.removesuffix("-kv16")] for mode in RING_DTYPES})
WARMUP, STEPS = 3, 10


def random_model(cfg: LMConfig, dtype: torch.dtype, quantize: str | None = None,
                 pack: bool = True) -> LMModel:
    """Random weights without the cost of the default initialisers."""
    model = build_on_meta(lambda: LMModel(cfg)).to(dtype).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("alpha"):
                param.fill_(1.0)
            else:
                param.uniform_(-0.03, 0.03, generator=generator)
    return prepare_for_inference(model, quantize, pack)


def step_gbytes(model: LMModel, state: LMState) -> float:
    """GB a step reads: every weight except the embedding tables (a step reads one row of
    each), in its stored format, plus the whole KV ring of every session (the attention reads
    all of it, masked; a long session fills it)."""
    tables = {id(m.weight) for m in model.modules()
              if isinstance(m, (TokenEmbedding, LowRankEmbedding))}
    total = 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in tables or name.startswith("_"):  # _audio_table: the fused embeddings
            continue
        if isinstance(t, (DynamicInt8Weight, Int8Weight, BlockedInt8Weight)):
            total += t.numel()
        elif isinstance(t, PackedWeight):
            total += t.numel() * 2
        else:
            total += t.numel() * t.element_size()
    ring = state.transformer
    total += 2 * ring.keys.numel() * ring.keys.element_size()
    return total / 1e9


def step_gflop(model: LMModel, batch: int) -> float:
    """2 x weight elements x batch: the matmuls' work (attention over the ring is small)."""
    return 2 * batch * sum(t.numel() for t in model.parameters()) / 1e9


def fill_ring(state: LMState) -> None:
    """Makes every session look past its first ``context`` steps: each slot of the KV ring
    holds one of the last ``capacity`` positions, so attention reads a full window, as in any
    session longer than the window (60 s for STT-1B). Without it a benchmark of a few steps
    would time attention over a nearly empty ring, which kernels that skip the empty slots
    make almost free."""
    ring = state.transformer
    ring.positions.copy_(torch.arange(ring.capacity).expand_as(ring.positions))
    ring.offset.fill_(ring.capacity)


def time_steps(cfg: LMConfig, settings: SamplingSettings, mode: str, batches: list[int],
               steps: int, full_ring: bool = True) -> dict[int, tuple[float, float, float]]:
    """{batch: (ms per step, GB read per step, GFLOP per step)}; ``full_ring``: see
    ``fill_ring`` (False: the first steps of fresh sessions)."""
    dtype, quantize = MODES[mode]
    generator = LMGenerator(random_model(cfg, dtype, quantize), RING_DTYPES.get(mode))
    times = {}
    for batch in batches:
        state = generator.init_state(batch, settings)
        if full_ring:
            fill_ring(state)
        codes = torch.randint(0, cfg.card, (batch, cfg.num_input_codebooks))
        samples = []
        for i in range(WARMUP + steps):
            start = time.perf_counter()
            generator.step(state, codes)
            if i >= WARMUP:
                samples.append(time.perf_counter() - start)
        times[batch] = (1000 * statistics.median(samples), step_gbytes(generator.model, state),
                        step_gflop(generator.model, batch))
    return times


def stt_frame_times(mimi: MimiModel, generator: LMGenerator, streams: int, frames: int,
                    settings: SamplingSettings | None = None,
                    warmup: int = WARMUP, full_ring: bool = True) -> list[float]:
    """ms per 80 ms frame of the ASR work in process, for ``streams`` sessions batched:
    Mimi ``encode_step`` of one frame, then one LM ``step`` on its codes. Takes the model
    objects, so any Mimi / LM (loaded, random, quantized) can be measured; the real-time factor
    is ``time / FRAME_MS``."""
    codebooks = generator.model.cfg.num_input_codebooks
    encoder = mimi.init_encoder_state(streams)
    state = generator.init_state(streams, settings or SamplingSettings.greedy())
    if full_ring:
        fill_ring(state)
    pcm = 0.1 * torch.randn(streams, 1, mimi.frame_size * (warmup + frames),
                            generator=torch.Generator().manual_seed(0))
    samples = []
    with torch.inference_mode():
        for i, frame in enumerate(pcm.to(mimi.device).split(mimi.frame_size, dim=-1)):
            start = time.perf_counter()
            codes = mimi.encode_step(frame, encoder, num_codebooks=codebooks)
            generator.step(state, codes[:, :, 0])
            if i >= warmup:
                samples.append(1e3 * (time.perf_counter() - start))
    return samples


def stt_frame_table(streams: list[int], frames: int, mode: str = "int8",
                    full_ring: bool = True) -> None:
    """Real-time factor of Mimi encoder + STT-1B LM step (``mode``) at each number of streams."""
    cfg, settings = SHAPES["stt_1b"]
    mimi = build_random_mimi("mimi_202407", seed=0, num_codebooks=cfg.num_input_codebooks)
    generator = LMGenerator(random_model(cfg, *MODES[mode]), RING_DTYPES.get(mode))
    ring = "full" if full_ring else "fresh"
    print(f"\nMimi encode_step + STT-1B {mode} step per {FRAME_MS} ms frame, {ring} KV ring "
          f"(median of {frames})")
    for n in streams:
        ms = statistics.median(stt_frame_times(mimi, generator, n, frames, settings,
                                               full_ring=full_ring))
        print(f"streams {n:2}: {ms:7.1f} ms per frame, real-time factor {ms / FRAME_MS:5.2f}",
              flush=True)


def loading_memory(cfg: LMConfig, dtype: str) -> tuple[float, float]:
    """(checkpoint size, peak RSS growth while loading) in GB, in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        model = random_model(cfg, torch.bfloat16, pack=False)
        save_state_dict(_unshared(model), Path(folder) / cfg.moshi_name)
        del model
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"}
        (Path(folder) / "config.json").write_text(json.dumps(config))
        size = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e9
        out = subprocess.run([sys.executable, __file__, "--load-only", folder, dtype],
                             capture_output=True, text=True, check=True)
        return size, float(out.stdout.split()[-1])


def _unshared(model: LMModel) -> LMModel:
    """The fused tables make parameters share storage; safetensors wants separate tensors."""
    for param in model.parameters():
        param.data = param.data.clone()
    return model


def _load_only(folder: str, dtype: str) -> None:
    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's lazy start-up allocations come first
    before = _memory_gb("VmRSS")
    load_lm(folder, dtype=getattr(torch, dtype))
    print(f"{_memory_gb('VmHWM') - before:.3f}")


def _memory_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. (getrusage's maxrss would include the
    parent's peak, inherited across fork.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e6  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--stt-streams", nargs="*", type=int, default=[],
                        help="also time Mimi encoder + STT-1B int8 per frame at these streams")
    parser.add_argument("--stt-mode", default="int8", choices=list(MODES),
                        help="the LM mode of --stt-streams")
    parser.add_argument("--fresh-ring", action="store_true",
                        help="time the first steps of fresh sessions (a nearly empty KV ring) "
                             "instead of sessions past their attention window")
    parser.add_argument("--load-only", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.load_only:
        _load_only(*args.load_only)
        return
    if not args.no_speed:
        speed_table(args, measure())
    if args.stt_streams:
        stt_frame_table(args.stt_streams, args.steps, args.stt_mode, not args.fresh_ring)
    if not args.no_memory:
        print("\npeak memory of loading (checkpoint stored bf16)")
        for shape in args.shapes:
            for dtype in ("bfloat16", "float32"):
                size, peak = loading_memory(SHAPES[shape][0], dtype)
                print(f"{shape:8} as {dtype:9} checkpoint {size:6.2f} GB, peak RSS growth "
                      f"{peak:6.2f} GB", flush=True)


def speed_table(args: argparse.Namespace, roof: Roofline) -> None:
    print(roof.describe())
    ring = "fresh sessions" if args.fresh_ring else "sessions past their attention window"
    print(f"ms per streaming step of {ring}, {args.threads} threads (median of {args.steps}); "
          "per batch: "
          "ms, GB/s of weights + KV ring read, fraction of the roofline limit")
    print(f"{'shape':8} {'mode':11} " + " ".join(f"{f'B={b}':>24}" for b in args.batches))
    for shape in args.shapes:
        cfg, settings = SHAPES[shape]
        for mode in args.modes:
            times = time_steps(cfg, settings, mode, args.batches, args.steps,
                               not args.fresh_ring)
            dtype = torch.float32 if mode == "float32" else torch.bfloat16
            bandwidth_only = MODES[mode][1] is not None  # int8: see the module docstring
            cells = [f"{ms:7.1f} {roof.row(ms, gb, 0.0 if bandwidth_only else gf, dtype)}"
                     for ms, gb, gf in (times[b] for b in args.batches)]
            print(f"{shape:8} {mode:11} " + " ".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
