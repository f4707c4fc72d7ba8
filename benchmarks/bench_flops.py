"""Benchmark: achieved FLOP/s of a training step of the `mnist` recipe's UNet (`--base-channels`: 32, the network
before issue 18, or 16, the preset's since), as a share of the measured matmul peak of this CPU, in float32 and in
bf16 autocast.

- Peak: the median time of a square matrix product (N = 2048, 2 N^3 FLOPs) in float32 and in bf16, after warm-up.
- Step: forward + MSE + backward + AdamW at batch 64 (bench_unet.make_train_step); its FLOPs are counted by
  `torch.utils.flop_counter.FlopCounterMode` (convolutions, matrix products and attention, forward and backward: the
  arithmetic the step cannot avoid; elementwise work is not counted).

    .venv/bin/python benchmarks/bench_flops.py [--threads 2] [--base-channels 16] [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import MNIST_32, make_train_step, training_inputs  # noqa: E402
from report import dated_cpu_line, on_this_cpu, publish, section  # noqa: E402

from diffusionlab.models import UNet  # noqa: E402
from diffusionlab.training.precision import cpu_bf16_flags  # noqa: E402

HEADING = "## Achieved FLOP/s of a training step (issue 18)"  # the 32-channel network's section
HEADING_16 = "## Achieved FLOP/s of a training step (issue 18, 16 base channels)"  # the preset's since issue 18


def median_seconds(fn, warmup: int = 2, repeats: int = 7) -> float:
    """Median wall-clock seconds of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """FLOP/s of an n x n matrix product in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                    help="also time bf16 autocast (auto: only where the CPU has native bf16; elsewhere it is emulated, "
                         "14x slower, and its matmul 'peak' runs one thread for minutes)")
    ap.add_argument("--base-channels", type=int, choices=(16, 32), default=32,
                    help="32: the recipe's network before issue 18 (its section); 16: the preset's since (its own)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    with_bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and bool(cpu_bf16_flags()))
    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(MNIST_32, base_channels=args.base_channels)
    x, t, target = training_inputs(cfg, args.batch)
    rows = []
    precisions = [("float32", torch.float32, False)] + ([("bf16 autocast", torch.bfloat16, True)] if with_bf16 else [])
    for name, dtype, bf16 in precisions:
        step = make_train_step(UNet(cfg), x, t, target, bf16)
        step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        seconds = median_seconds(step)
        peak = matmul_peak(dtype)
        rows.append(f"| {name} | {flops / 1e9:.2f} | {seconds * 1e3:.1f} | {args.batch / seconds:.0f} | "
                    f"{flops / seconds / 1e9:.1f} | {peak / 1e9:.1f} | {100 * flops / seconds / peak:.1f}% |")
        print(rows[-1], flush=True)
    cmd = "python benchmarks/bench_flops.py " + " ".join(argv or sys.argv[1:])
    body = section([
        f"{dated_cpu_line()}, native bf16: {', '.join(cpu_bf16_flags()) or 'none'}",
        f"- Command: `{cmd}` ({args.threads} threads; the mnist recipe's UNet at {args.base_channels} base "
        f"channels, {sum(p.numel() for p in UNet(cfg).parameters()):,} parameters, batch "
        f"{args.batch}; a training step is forward + MSE + backward + AdamW; FLOPs counted by FlopCounterMode; peak = "
        "2 N^3 / time of a 2048 x 2048 matrix product in the same dtype; medians of 7 after 2 warm-ups)",
    ], ["precision", "GFLOP per step", "ms per step", "images/s", "achieved GFLOP/s", "matmul peak GFLOP/s",
        "share of peak"], rows)
    publish(on_this_cpu(HEADING if args.base_channels == 32 else HEADING_16), body, args.write)


if __name__ == "__main__":
    main()
