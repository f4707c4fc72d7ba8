"""The playground's work queue: one worker thread runs the jobs one at a time (two samplers at once would only share
the same cores), each job streams its events to whoever listens, and any job can be cancelled, queued or running.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DiffusionLabError

TERMINAL = ("done", "failed", "cancelled")  # the last event of every job (not "error": EventSource's own event)
MAX_WAITING = 16  # jobs queued or running at once; more is a "busy" error, not an unbounded backlog


class Cancelled(Exception):
    """Raised inside a job (from its step callback) when the job was cancelled."""


class Busy(DiffusionLabError):
    """Too many jobs waiting."""


@dataclass
class Job:
    """One request: its work, its events (a thread-safe queue read by the event stream) and its cancel flag."""

    id: str
    work: Callable[[Job], dict[str, Any]]
    events: queue.Queue = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued, running, done, failed, cancelled
    started: float = 0.0

    def emit(self, kind: str, **data: Any) -> None:
        """Send an event to the stream."""
        self.events.put({"type": kind, "job": self.id, **data})

    def check(self) -> None:
        """Stop here (raise Cancelled) if the job was cancelled."""
        if self.cancel.is_set():
            raise Cancelled

    @property
    def finished(self) -> bool:
        """True once the job sent its last event."""
        return self.state in TERMINAL

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class Worker:
    """Runs jobs one after the other on a daemon thread."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="diffusionlab-serve-worker", daemon=True).start()

    def submit(self, work: Callable[[Job], dict[str, Any]]) -> Job:
        """Queue `work(job) -> result` (the `done` event's data); a busy server refuses with Busy."""
        with self._lock:
            if sum(not j.finished for j in self.jobs.values()) >= MAX_WAITING:
                raise Busy(f"{MAX_WAITING} jobs are already waiting; cancel one or wait")
            for old in [k for k, j in self.jobs.items() if j.finished][: max(0, len(self.jobs) - 256)]:
                del self.jobs[old]  # keep the finished ones for a while, not forever
            job = Job(str(next(self._ids)), work)
            self.jobs[job.id] = job
        job.emit("queued", ahead=self._queue.qsize())
        self._queue.put(job)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job.cancel.is_set():
                job.state = "cancelled"
                job.emit("cancelled", seconds=0.0)
                continue
            job.state, job.started = "running", time.perf_counter()
            job.emit("started")
            try:
                result = job.work(job)
            except Cancelled:
                job.state = "cancelled"
                job.emit("cancelled", seconds=time.perf_counter() - job.started)
            except DiffusionLabError as e:  # a request the checks let through but the model refuses: its message
                job.state = "failed"
                job.emit("failed", error=str(e))
            except Exception as e:  # an internal failure: one line, never a traceback on the page
                job.state = "failed"
                job.emit("failed", error=f"internal error: {type(e).__name__}: {e}")
            else:
                job.state = "done"
                job.emit("done", seconds=time.perf_counter() - job.started, **result)


__all__ = ["Busy", "Cancelled", "Job", "MAX_WAITING", "TERMINAL", "Worker"]
