"""`train --procs N`: data-parallel training on one machine, by running the same command under torchrun.

`--procs auto` (the default) is one process per GPU on a CUDA machine. On a CPU it is one process, except where two
processes x 1 thread were measured to train faster than one process x 2 threads (`auto_procs_on_cpu`): the `mnist`
and `folder32` presets in float32 on a CPU without native bf16, 1.15x and 1.11x in paired runs on an AVX2-only CPU
(BENCHMARKS.md, "Processes against threads, paired (`--procs auto`)" on AVX2, and its folder32 section). On an
avx512_bf16 CPU, in bf16, one process was faster (3.33 against 3.44 it/s, "Threads, processes and a shared CPU on
AVX512"): every step all-reduces the gradients through gloo while one process already keeps every core busy. The
processes split one global batch, which the data stream draws by step (training/loop.py), so the layout changes the
arithmetic's rounding, not the recipe.
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


# The presets whose training ran faster as 2 processes x 1 thread than as 1 process x 2 threads, in float32 on a CPU
# without native bf16, and the evidence. A preset not listed keeps one process: digits measured a paired median of
# 1.04x (0.98 to 1.14) with 3.4 s more start-up under torchrun (BENCHMARKS.md, "Processes against threads, paired
# (`--procs auto`), digits on AVX2"), within the noise; mnist-ldm 0.84x (0.70 to 1.04; each process encodes the whole
# training set first, about 100 s more) and its first stage mnist-ae 1.02x (0.93 to 1.09), both on AVX2. The baseline
# presets (GAN, VAE, flow) are not measured and always train in one process here. mnist's 1.15x was paired at the 32
# base channels it had then; its 16 channels since issue 18 were measured only in 2 processes on AVX2 (3.17 it/s,
# the row base16-procs2 of "The mnist recipe at an equal budget: an AVX2-only CPU"), not paired against one.
TWO_PROCESSES_PAY: dict[str, str] = {
    "mnist": "paired median 1.15x on an AVX2-only CPU (BENCHMARKS.md, 'Processes against threads, paired')",
    # 3 pairs of 90 s: 1.07x, 1.11x, 1.29x; 2 processes start 21 s later, repaid after about 3 minutes of training
    "folder32": "paired median 1.11x on an AVX2-only CPU (BENCHMARKS.md, 'Processes against threads, paired "
                "(`--procs auto`), folder32')",
}


@dataclass(frozen=True)
class ProcsChoice:
    """How many data-parallel processes a training runs in, and the one-line reason."""

    procs: int
    reason: str


def auto_procs_on_cpu(preset: str | None, batch_size: int, precision: str, native_bf16: bool, planned_threads: int,
                      idle: bool) -> ProcsChoice:
    """`--procs auto` on a CPU: 2 processes x 1 thread where that was measured faster (TWO_PROCESSES_PAY), else 1.

    `precision` is what the run trains in ("no" = float32); `planned_threads` is the team this process planned for
    an idle machine (0 when --threads or OMP_NUM_THREADS chose it); `idle` says no other process keeps a core busy
    (beside another job one process with the thread watch adapts, two processes cannot: threads.py)."""
    if preset not in TWO_PROCESSES_PAY:
        return ProcsChoice(1, "one process on a CPU (2 processes were measured to pay only for the "
                              f"{', '.join(TWO_PROCESSES_PAY)} preset)")
    why_not = ("this CPU has native bf16 (there one process was faster)" if native_bf16 else
               "the run trains in bf16, emulated here" if precision != "no" else
               "the thread count was chosen (--threads or OMP_NUM_THREADS)" if planned_threads == 0 else
               "fewer than 2 cores" if planned_threads < 2 else
               "other processes keep a core busy" if not idle else
               f"the batch of {batch_size} does not split in two" if batch_size % 2 else None)
    if why_not:
        return ProcsChoice(1, f"one process: {why_not}")
    return ProcsChoice(2, f"the {preset} preset in float32 without native bf16: {TWO_PROCESSES_PAY[preset]}")


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
    return auto_procs_on_cpu(cfg.preset, cfg.train.batch_size, precision, native, plan.wanted or 0,
                             plan.wanted is not None and plan.threads == plan.wanted)


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


__all__ = ["MAX_PROCS", "TWO_PROCESSES_PAY", "ProcsChoice", "auto_procs_on_cpu", "procs_arg", "relaunch",
           "resolve_procs", "trained_with", "under_launcher", "without_procs"]
