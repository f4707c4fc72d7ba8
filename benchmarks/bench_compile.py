"""torch.compile against eager for one training step, ours and diffusers' UNet2DModel, interleaved in one process.

    python benchmarks/bench_compile.py [--precision auto|bf16|fp32] [--threads 2] [--write] [--heading "## ..."]

The `mnist` preset's network (bench_unet.py's first case, the same parameter count on both sides; diffusers with
its default SDPA attention and with its classic attention processor); a training step is
forward + MSE + backward + AdamW under CPU bf16 autocast or in float32 (`auto`: bf16 where the CPU has native bf16,
as the trainer's `--mixed-precision auto`). One section per CPU kind (report.on_this_cpu). The compile time
(Inductor, first two steps) is reported but not timed into the steps. Medians of wall-clock per step; ratios are paired per repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import (DiffusersWrapper, cases, classic_attention, diffusers_config, interleaved,  # noqa: E402
                        make_train_step, paired_ratio, training_inputs)
from report import dated_cpu_line, on_this_cpu, publish  # noqa: E402

from diffusionlab.training.precision import cpu_bf16_flags  # noqa: E402

HEADING = "## torch.compile for a training step (issue 18)"


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--heading", default=HEADING, help="the BENCHMARKS.md section to write (one per network)")
    args = ap.parse_args()
    from diffusers import UNet2DModel

    from diffusionlab.models.unet import UNet

    torch.set_num_threads(args.threads)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and bool(cpu_bf16_flags()))
    case = cases(False)[0]
    c = case.ours
    x, t, target = training_inputs(c, case.batch)
    nets = {"ours": lambda: UNet(c), "diffusers": lambda: DiffusersWrapper(UNet2DModel(**diffusers_config(c))),
            "diffusers+classic-attn": lambda: DiffusersWrapper(classic_attention(UNet2DModel(**diffusers_config(c))))}
    fns, compile_s = {}, {}
    for name, make in nets.items():
        fns[f"{name} eager"] = make_train_step(make(), x, t, target, bf16)
        step = make_train_step(torch.compile(make()), x, t, target, bf16)
        start = time.perf_counter()
        step()
        step()
        compile_s[name] = time.perf_counter() - start
        print(f"{name}: compiled in {compile_s[name]:.0f} s", file=sys.stderr, flush=True)
        fns[f"{name} compiled"] = step
    times = interleaved(fns, 1, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = ["| variant | ms per step | img/s | against ours eager |", "|---|---|---|---|"]
    for k in fns:
        lines.append(f"| {k} | {med[k] * 1e3:.1f} | {case.batch / med[k]:.0f} | "
                     f"{paired_ratio(times[k], times['ours eager']):.2f}x |")
    best_ours = min(("ours eager", "ours compiled"), key=med.__getitem__)
    best_peer = min((k for k in fns if k.startswith("diffusers")), key=med.__getitem__)
    body = "\n".join([
        dated_cpu_line(),
        f"- Command: `python benchmarks/bench_compile.py --precision {args.precision} --threads {args.threads}"
        f"{' --write' if args.write else ''}{'' if args.heading == HEADING else f' --heading {args.heading!r}'}` "
        f"({'bf16 autocast' if bf16 else 'float32'}; the `mnist` preset's network "
        f"({c.base_channels} base channels), batch {case.batch}, one training step, fused AdamW, "
        f"{args.repeats} interleaved repeats after 1 warm-up; `against ours eager` > 1 means slower than ours eager)",
        "- Compile time (Inductor, the first two steps): "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in compile_s.items()),
        "", *lines, "",
        f"- Each side at its best: `{best_ours}` against `{best_peer}`: "
        f"**{paired_ratio(times[best_peer], times[best_ours]):.2f}x** (> 1: ours faster)",
    ])
    publish(on_this_cpu(args.heading), body, args.write)


if __name__ == "__main__":
    main()
