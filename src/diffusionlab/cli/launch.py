"""`train --procs N`: data-parallel training on one machine, by running the same command under torchrun.

`--procs auto` (the default) is one process per GPU on a CUDA machine and one process on a CPU. On an avx512_bf16 CPU,
2 processes x 1 thread trained slower than 1 process x 2 threads (BENCHMARKS.md, "Threads, processes and a shared CPU
on AVX512"): every step all-reduces the gradients through gloo while one process already keeps every core busy. On an
AVX2-only CPU they trained the mnist preset 4-15% faster ("Issue 18 on an AVX2-only CPU, second session"); a per-CPU
default is not made yet, so there `--procs 2` is the user's choice.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

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


def resolve_procs(requested: int | str) -> int:
    """The processes `--procs` asks for on this machine."""
    import torch

    if requested != "auto":
        return int(requested)
    return torch.cuda.device_count() if torch.cuda.is_available() and os.environ.get("DIFFUSIONLAB_CPU") != "1" else 1


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


def relaunch(procs: int, argv: Sequence[str], threads: int | None) -> int:
    """Run `diffusionlab ARGV` in `procs` processes under torchrun (standalone rendezvous); its exit code."""
    from ..threads import usable_cores

    if procs > 1 and threads is not None and threads * procs > usable_cores():
        raise ConfigError(f"--procs {procs} x --threads {threads} is more threads than the {usable_cores()} cores")
    per_process = threads or max(1, usable_cores() // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    print(f"launching {procs} data-parallel processes x {per_process} thread(s) (torchrun)", flush=True)
    return subprocess.run([*torchrun, "-m", "diffusionlab.cli", *without_procs(argv)], env=env,
                          cwd=Path.cwd()).returncode


__all__ = ["MAX_PROCS", "procs_arg", "relaunch", "resolve_procs", "under_launcher", "without_procs"]
