"""Benchmark: what a training step of each candidate `mnist` network costs on this CPU (width, depth, attention).

The recipe's time budget buys steps, so a network's cost per step decides how many images it sees in 20 minutes.
Each candidate is the `mnist` preset's UNet with one change (VARIANTS). One training step (forward + MSE + backward
+ AdamW, batch 64, bench_unet.make_train_step) of every variant is timed in turn, interleaved over repeats in one
process, in the precision `--mixed-precision auto` picks on this CPU; the table gives medians and the paired ratio
to the preset's own network.

    .venv/bin/python benchmarks/bench_widths.py [--threads 2] [--repeats 7] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import MNIST_32, make_train_step, training_inputs  # noqa: E402
from report import dated_cpu_line, on_this_cpu, publish, section  # noqa: E402

from diffusionlab.models import UNet, count_parameters  # noqa: E402
from diffusionlab.training.precision import cpu_bf16_flags  # noqa: E402

HEADING = "## The cost of a step per network width and depth (issue 18)"

# name -> (UNetConfig changes, the train flag that makes a recipe row of it)
VARIANTS: dict[str, tuple[dict, str]] = {
    "preset": ({}, ""),
    "base24": ({"base_channels": 24}, "--base-channels 24"),
    "base16": ({"base_channels": 16}, "--base-channels 16"),
    "base12": ({"base_channels": 12}, "--base-channels 12"),
    "base48": ({"base_channels": 48}, "--base-channels 48"),
    "blocks2": ({"num_res_blocks": 2}, "--num-res-blocks 2"),
    "attn14": ({"attention_resolutions": (14, 7)}, "--attention-resolutions 14,7"),
    "no-attn": ({"attention_resolutions": ()}, '--attention-resolutions ""'),
    "levels2": ({"channel_mult": (1, 2), "attention_resolutions": (14,)}, "--channel-mult 1,2 --attention-resolutions 14"),
}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    bf16 = bool(cpu_bf16_flags())  # what --mixed-precision auto picks on a CPU
    torch.set_num_threads(args.threads)
    x, t, target = training_inputs(MNIST_32, args.batch)
    steps, info = {}, {}
    for name, (change, _) in VARIANTS.items():
        net = UNet(replace(MNIST_32, **change))
        steps[name] = make_train_step(net, x, t, target, bf16)
        steps[name]()  # warm-up (oneDNN primitive creation)
        with FlopCounterMode(display=False) as counter:
            steps[name]()
        info[name] = (count_parameters(net), counter.get_total_flops())
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits every variant
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, (_, flag) in VARIANTS.items():
        ms = 1e3 * statistics.median(times[name])
        ratio = statistics.median(a / b for a, b in zip(times[name], times["preset"]))
        params, flops = info[name]
        rows.append(f"| {name} | {flag or 'the preset'} | {params:,} | {flops / 1e9:.1f} | {ms:.0f} | "
                    f"{args.batch / ms * 1e3:.0f} | {ratio:.2f} |")
        print(rows[-1], flush=True)
    cmd = "python benchmarks/bench_widths.py " + " ".join(argv or sys.argv[1:])
    body = section([
        f"{dated_cpu_line()}, precision {'bf16 autocast' if bf16 else 'float32'} (auto)",
        f"- Command: `{cmd}` ({args.threads} threads, batch {args.batch}; one training step per variant in turn, "
        f"{args.repeats} interleaved repeats after a warm-up; `cost` is the median paired ratio to the preset's step)",
    ], ["variant", "change", "parameters", "GFLOP per step", "ms per step", "images/s", "cost"], rows)
    publish(on_this_cpu(HEADING), body, args.write)


if __name__ == "__main__":
    main()
