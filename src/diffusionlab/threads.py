"""CPU threads: how many a command uses, and what to do when other processes share the cores.

torch's CPU kernels run on an OpenMP thread team. When the team has as many threads as there are cores and another
busy process takes one of those cores, a thread that reaches a barrier spins while it waits for a colleague who is
not running: we measured four 2-thread trainings at once on 2 cores running about 30x slower than one alone
(BENCHMARKS.md, "Threads"). So a command:

- uses one thread per physical core it may run on (`--threads N` overrides it), divided among the data-parallel
  processes of one machine;
- looks, before it starts, at how busy the other processes keep the CPU; when they leave fewer cores free than it
  would use, it says so once, and -- unless `--threads` was given -- uses only the free cores (at least one).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import psutil
import torch

from .errors import ConfigError

MAX_THREADS = 1024


def usable_cores() -> int:
    """Physical cores this process may run on (the affinity mask bounds the machine's count)."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        allowed = os.cpu_count() or 1
    return max(1, min(physical, allowed))


def busy_elsewhere(seconds: float = 0.15) -> float:
    """Cores' worth of CPU time other processes used over the next `seconds` (this one is idle while it measures)."""
    logical = psutil.cpu_count() or 1
    own = psutil.Process()
    before = sum(own.cpu_times()[:2])
    total = psutil.cpu_percent(interval=seconds) / 100 * logical
    mine = (sum(own.cpu_times()[:2]) - before) / seconds
    return max(0.0, total - mine)


def local_processes() -> int:
    """Data-parallel processes on this machine (torchrun / accelerate launch set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class ThreadPlan:
    """The threads a command runs with and why."""

    threads: int
    reason: str
    warning: str | None = None


def plan_threads(requested: int | None, cores: int | None = None, busy: float | None = None,
                 processes: int | None = None, source: str = "--threads") -> ThreadPlan:
    """Threads for this process: `requested` (from `source`), else the free cores' share of this machine's
    processes. `cores`, `busy` (cores' worth used by other processes) and `processes` default to measurements."""
    if requested is not None and not 1 <= requested <= MAX_THREADS:
        raise ConfigError(f"{source} must be between 1 and {MAX_THREADS}, got {requested}")
    cores = usable_cores() if cores is None else cores
    processes = local_processes() if processes is None else processes
    share = max(1, cores // processes)
    if requested == 1 or (requested is None and share == 1) or processes > 1:
        # One thread has no team to wait for; sibling data-parallel processes are planned for by the share.
        return ThreadPlan(requested or share, source if requested else _why(cores, processes))
    busy = busy_elsewhere() if busy is None else busy
    free = max(1, int(cores - busy + 0.5))  # the cores other processes leave free, rounded
    wanted = requested or share
    if busy < 0.5 or free >= wanted:
        return ThreadPlan(wanted, source if requested else _why(cores, processes))
    warning = (f"other processes keep {busy:.1f} of the {cores} cores busy, so {wanted} threads would spin-wait for "
               f"each other (measured up to 30x slower)")
    if requested is not None:
        return ThreadPlan(requested, source, warning + f"; {source} {requested} was asked for (--threads {free} or "
                                                       f"OMP_WAIT_POLICY=PASSIVE avoid it)")
    return ThreadPlan(free, f"{free} of {cores} cores free", warning + f"; using {free} (--threads N to choose)")


def _why(cores: int, processes: int) -> str:
    return f"{cores} physical core(s)" + (f" shared by {processes} processes" if processes > 1 else "")


def apply_threads(requested: int | None, announce: bool = True) -> ThreadPlan:
    """Plan the threads (`requested`, else OMP_NUM_THREADS if set, else planned), set torch's intra-op thread count,
    and print the warning (once) if there is one."""
    source = "--threads"
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        requested, source = max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    plan = plan_threads(requested, source=source)
    torch.set_num_threads(plan.threads)
    if plan.warning and announce:
        print(f"warning: {plan.warning}", file=sys.stderr, flush=True)
    return plan


__all__ = ["MAX_THREADS", "ThreadPlan", "apply_threads", "busy_elsewhere", "local_processes", "plan_threads",
           "usable_cores"]
