"""Fault injection for the crash tests: kill this process at a named point of a write.

`DIFFUSIONLAB_FAULT=POINT` (or `POINT@STEP`) makes `maybe_fault(POINT, step)` send SIGKILL to the process itself, so
a test can prove that a kill at the worst moment (mid-checkpoint, between two renames) loses nothing. Unset, it does
nothing. Points: checkpoint:tensors (some files of the new checkpoint written), checkpoint:renamed (the new checkpoint
in place, older ones not yet pruned), metrics:row (a metrics row half written).
"""

from __future__ import annotations

import os
import signal

ENV = "DIFFUSIONLAB_FAULT"


def armed(point: str, step: int | None = None) -> bool:
    """Whether DIFFUSIONLAB_FAULT asks for a fault at this point (and step)."""
    want = os.environ.get(ENV)
    if not want:
        return False
    name, _, at = want.partition("@")
    return name == point and (not at or (step is not None and at == str(step)))


def maybe_fault(point: str, step: int | None = None) -> None:
    """SIGKILL this process if DIFFUSIONLAB_FAULT names this point (and step)."""
    if armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "armed", "maybe_fault"]
