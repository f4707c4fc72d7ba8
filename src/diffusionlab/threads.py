"""CPU threads: how many a command uses, and what to do when other processes share the cores.

torch's CPU kernels run on an OpenMP thread team. When the team has as many threads as there are cores and another
busy process takes one of those cores, a thread that reaches a barrier spins while it waits for a colleague who is
not running: we measured four 2-thread trainings at once on 2 cores running about 30x slower than one alone
(BENCHMARKS.md, "Threads"). So a command:

- uses one thread per physical core it may run on (`--threads N` overrides it), divided among the data-parallel
  processes of one machine;
- looks, before it starts, at how busy the other processes keep the CPU; when they leave fewer cores free than it
  would use, it says so once, and -- unless `--threads` was given -- uses only the free cores (at least one);
- while it trains, keeps looking (ThreadWatch, every few seconds between steps): a job started after it makes it drop
  to the cores left free, and when that job ends it takes them back. Without this the earlier of two jobs keeps a
  team that spin-waits for the whole time they share the CPU (BENCHMARKS.md, "Issue 18 on an AVX2-only CPU, second
  session": 1.13 it/s in total against 1.45 with one thread each; with the watch about 0.7 + 0.7).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

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
    busy0, own0 = cpu_seconds()
    time.sleep(seconds)
    busy1, own1 = cpu_seconds()
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / seconds)


def cpu_seconds() -> tuple[float, float]:
    """(core-seconds the machine's CPUs have been busy since boot, core-seconds this process has used)."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return busy, sum(psutil.Process().cpu_times()[:2])


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
    wanted: int | None = None  # the count an idle machine gets, when it was planned (not asked for): ThreadWatch's cap


_applied: ThreadPlan | None = None  # what apply_threads set for this process; a ThreadWatch follows it


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
    wanted = requested or share
    free = threads_for(wanted, cores, busy)
    if free == wanted:
        return ThreadPlan(wanted, source if requested else _why(cores, processes), wanted=None if requested else share)
    warning = (f"other processes keep {busy:.1f} of the {cores} cores busy, so {wanted} threads would spin-wait for "
               f"each other (measured up to 30x slower)")
    if requested is not None:
        return ThreadPlan(requested, source, warning + f"; {source} {requested} was asked for (--threads {free} or "
                                                       f"OMP_WAIT_POLICY=PASSIVE avoid it)")
    return ThreadPlan(free, f"{free} of {cores} cores free", warning + f"; using {free} (--threads N to choose)",
                      wanted=share)


def threads_for(wanted: int, cores: int, busy: float) -> int:
    """`wanted`, or the cores that `busy` cores' worth of other processes leave free (rounded, at least 1) if fewer."""
    free = max(1, int(cores - busy + 0.5))
    return wanted if busy < 0.5 or free >= wanted else free


def _why(cores: int, processes: int) -> str:
    return f"{cores} physical core(s)" + (f" shared by {processes} processes" if processes > 1 else "")


def apply_threads(requested: int | None, announce: bool = True) -> ThreadPlan:
    """Plan the threads (`requested`, else OMP_NUM_THREADS if set, else planned), set torch's intra-op thread count,
    and print the warning (once) if there is one."""
    global _applied
    source = "--threads"
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        requested, source = max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    plan = plan_threads(requested, source=source)
    torch.set_num_threads(plan.threads)
    _applied = plan
    if plan.warning and announce:
        print(f"warning: {plan.warning}", file=sys.stderr, flush=True)
    return plan


class ThreadWatch:
    """Follows the other processes' CPU use while a command runs and re-plans its thread count between steps.

    Every `every` seconds (at the first poll after) it takes the machine's busy time minus its own over the interval:
    the cores' worth other processes used, measured without pausing. When the thread count that leaves them their
    cores (`threads_for`, capped at the planned `wanted`) differs from the current one on two looks in a row (a
    short burst changes nothing), it sets that count. Only for a planned count: `--threads N` is kept as asked.
    """

    def __init__(self, wanted: int, cores: int, every: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 sample: Callable[[], tuple[float, float]] = cpu_seconds):
        self.wanted, self.cores, self.every, self.clock, self.sample = wanted, cores, every, clock, sample
        self.last_t, self.last = clock(), sample()
        self.pending: int | None = None

    def poll(self) -> tuple[int, int, float] | None:
        """(threads before, threads now, cores' worth busy elsewhere) when it changed the count, else None."""
        now = self.clock()
        if now - self.last_t < self.every:
            return None
        busy, own = self.sample()
        others = max(0.0, ((busy - self.last[0]) - (own - self.last[1])) / (now - self.last_t))
        self.last_t, self.last = now, (busy, own)
        current, target = torch.get_num_threads(), threads_for(self.wanted, self.cores, others)
        if target == current or self.pending != target:
            self.pending = None if target == current else target
            return None
        self.pending = None
        torch.set_num_threads(target)
        return current, target, others


def applied_plan() -> ThreadPlan | None:
    """What apply_threads planned for this process (None if it never ran, or was forgotten)."""
    return _applied


def forget_plan() -> None:
    """Drop the applied plan: a program calling main(argv) in-process keeps its own threads, unwatched."""
    global _applied
    _applied = None


def thread_watch() -> ThreadWatch | None:
    """A watch over the count apply_threads planned for this process; None if it was asked for or never planned."""
    if _applied is None or _applied.wanted is None or _applied.wanted < 2:
        return None
    return ThreadWatch(_applied.wanted, usable_cores())


__all__ = ["MAX_THREADS", "ThreadPlan", "ThreadWatch", "applied_plan", "apply_threads", "busy_elsewhere",
           "cpu_seconds", "forget_plan", "local_processes", "plan_threads", "thread_watch", "threads_for", "usable_cores"]
