"""`train --procs N`: data-parallel training on one machine, by running the same command under torchrun.

`--procs auto` (the default) is one process per GPU on a CUDA machine. On a CPU it is one process, except where two
processes x 1 thread were measured to train faster than one process x 2 threads (`PROCS_MEASURED`, read by
`auto_procs_on_cpu`): a preset, at the network width it was measured with, on the kind of CPU and in the precision of
the measurement. The gain depends on all three: at 32 base channels the `mnist` preset trained 1.15x faster in two
processes in float32 on an AVX2-only CPU, but 3% slower in bf16 on an avx512_bf16 CPU, where one process already
keeps both cores busy; at 16 base channels, in bf16, two processes were 1.14x faster (BENCHMARKS.md, "Processes against
threads, paired (`--procs auto`)", on AVX2 and on AVX512). The processes split one global batch, which the data
stream draws by step (training/loop.py), so the layout changes the arithmetic's rounding, not the recipe.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

MAX_PROCS = 256


def procs_arg(s: str) -> int | str:
    """'auto' or a number of processes, 1 to MAX_PROCS."""
    if s == "auto":
        return s
    try:
        value = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of processes, got {s!r}") from None
    if not 1 <= value <= MAX_PROCS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_PROCS} processes, got {value}")
    return value


# Where 2 processes x 1 thread were measured against 1 process x 2 threads on 2 cores: (preset, base channels, how
# the CPU runs the network) -> (the faster process count, the evidence). "float32" means float32 on a CPU without
# native bf16 (AVX2), "bf16" bf16 autocast on a CPU with native bf16 (avx512_bf16 or AMX). A setting not listed trains
# in one process: digits measured a paired median of 1.04x (0.98 to 1.14) with 3.4 s more start-up under torchrun,
# within the noise; mnist-ldm 0.84x (each process encodes the whole training set first, about 100 s more) and its
# first stage mnist-ae 1.02x, all on AVX2 ("Processes against threads, paired (`--procs auto`), digits / mnist-ldm /
# mnist-ae on AVX2"). The baseline presets (GAN, VAE, flow) are not measured.
PROCS_MEASURED: dict[tuple[str, int, str], tuple[int, str]] = {
    ("mnist", 32, "float32"): (2, "paired median 1.15x on an AVX2-only CPU (BENCHMARKS.md, 'Processes against "
                                  "threads, paired (`--procs auto`) on AVX2')"),
    # The preset's width since issue 18. On AVX2 its rows trained in 2 processes (3.17 it/s, "The mnist recipe at an
    # equal budget: an AVX2-only CPU") but were not paired against one: the 32-channel pairing stands in for it.
    ("mnist", 16, "float32"): (2, "paired 1.15x at 32 channels on an AVX2-only CPU; at 16 channels trained in 2 "
                                  "processes there, not paired"),
    ("mnist", 32, "bf16"): (1, "one process was faster with native bf16 (3.44 against 3.33 it/s, BENCHMARKS.md, "
                               "'Threads, processes and a shared CPU on AVX512')"),
    ("mnist", 16, "bf16"): (2, "paired median 1.14x with native bf16 (BENCHMARKS.md, 'Processes against threads, "
                               "paired (`--procs auto`) on AVX512')"),
    # 3 pairs of 90 s: 1.07x, 1.11x, 1.29x; 2 processes start 21 s later, repaid after about 3 minutes of training
    ("folder32", 32, "float32"): (2, "paired median 1.11x on an AVX2-only CPU (BENCHMARKS.md, 'Processes against "
                                     "threads, paired (`--procs auto`), folder32')"),
}


@dataclass(frozen=True)
class ProcsChoice:
    """How many data-parallel processes a training runs in, and the one-line reason."""

    procs: int
    reason: str


def auto_procs_on_cpu(preset: str | None, base_channels: int | None, batch_size: int, precision: str,
                      native_bf16: bool, planned_threads: int, idle: bool) -> ProcsChoice:
    """`--procs auto` on a CPU: 2 processes x 1 thread where that was measured faster (PROCS_MEASURED), else 1.

    `precision` is what the run trains in ("no" = float32); `planned_threads` is the team this process planned for
    an idle machine (0 when --threads or OMP_NUM_THREADS chose it); `idle` says no other process keeps a core busy
    (beside another job one process with the thread watch adapts, two processes cannot: threads.py)."""
    cpu = ("bf16" if native_bf16 and precision == "bf16" else
           "float32" if not native_bf16 and precision == "no" else None)
    if cpu is None:
        return ProcsChoice(1, "one process: " + ("the run trains in bf16, emulated here" if precision != "no" else
                                                 "float32 on a CPU with native bf16 was not measured"))
    measured = PROCS_MEASURED.get((preset or "", base_channels or 0, cpu))
    if measured is None:
        faster = sorted({f"{p} ({c} channels, {k})" for (p, c, k), (n, _) in PROCS_MEASURED.items() if n == 2})
        return ProcsChoice(1, f"one process on a CPU (2 processes were measured to pay only for {', '.join(faster)})")
    procs, evidence = measured
    why_not = ("the thread count was chosen (--threads or OMP_NUM_THREADS)" if planned_threads == 0 else
               "fewer than 2 cores" if planned_threads < 2 else
               "other processes keep a core busy" if not idle else
               f"the batch of {batch_size} does not split in two" if batch_size % 2 else None)
    if procs == 1 or why_not:
        return ProcsChoice(1, f"one process: {why_not or evidence}")
    return ProcsChoice(2, f"the {preset} preset at {base_channels} base channels in {cpu}: {evidence}")


def trained_with(run_dir: Path) -> int | None:
    """The number of processes the newest readable checkpoint of `run_dir` was trained in (None if unknown)."""
    from ..runs import newest_saved_state

    world = (newest_saved_state(run_dir) or {}).get("world_size")
    return world if isinstance(world, int) and world >= 1 else None


def resolve_procs(requested: int | str, cfg: Any = None, resume_from: Path | None = None) -> ProcsChoice:
    """The processes `--procs` asks for on this machine, for the run `cfg` (a new run, or `resume_from`'s)."""
    import torch

    if requested != "auto":
        return ProcsChoice(int(requested), "--procs")
    if torch.cuda.is_available() and os.environ.get("DIFFUSIONLAB_CPU") != "1":
        return ProcsChoice(torch.cuda.device_count(), "one process per GPU")
    from ..threads import applied_plan, usable_cores

    if resume_from is not None:  # a resumed run keeps its layout: bit-exact only in the same rounding
        world = trained_with(resume_from)
        if world is not None and world <= usable_cores():
            return ProcsChoice(world, "the layout the run was trained in")
    from ..training.config import AutoencoderRunConfig, RunConfig
    from ..training.precision import cpu_bf16_flags, resolve_mixed_precision

    plan = applied_plan()
    # A baseline, or main(argv) called in-process: one process. Diffusion and its first stage read the table.
    if not isinstance(cfg, RunConfig | AutoencoderRunConfig) or plan is None:
        return ProcsChoice(1, "one process on a CPU")
    native = bool(cpu_bf16_flags())
    precision = resolve_mixed_precision(cfg.train.mixed_precision, "cpu").mixed_precision
    return auto_procs_on_cpu(cfg.preset, cfg.model.get("base_channels"), cfg.train.batch_size, precision, native,
                             plan.wanted or 0, plan.wanted is not None and plan.threads == plan.wanted)


def under_launcher() -> bool:
    """True inside a process that torchrun or `accelerate launch` started."""
    return "LOCAL_RANK" in os.environ


def without_procs(argv: Sequence[str]) -> list[str]:
    """The command line with its --procs option removed (the launched processes must not launch again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            out.append(a)
    return out


def relaunch(procs: int, argv: Sequence[str], threads: int | None, reason: str = "--procs") -> int:
    """Run `diffusionlab ARGV` in `procs` processes under torchrun (standalone rendezvous); its exit code."""
    from ..threads import usable_cores

    if procs > 1 and threads is not None and threads * procs > usable_cores():
        raise ConfigError(f"--procs {procs} x --threads {threads} is more threads than the {usable_cores()} cores")
    per_process = threads or max(1, usable_cores() // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    print(f"launching {procs} data-parallel processes x {per_process} thread(s) (torchrun; {reason})", flush=True)
    return subprocess.run([*torchrun, "-m", "diffusionlab.cli", *without_procs(argv)], env=env,
                          cwd=Path.cwd()).returncode


__all__ = ["MAX_PROCS", "PROCS_MEASURED", "ProcsChoice", "auto_procs_on_cpu", "procs_arg", "relaunch",
           "resolve_procs", "trained_with", "under_launcher", "without_procs"]
