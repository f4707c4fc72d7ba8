"""A run directory's life on disk: one writer at a time, created once, cleaned of a killed writer's leftovers, its
metrics consistent with its checkpoints, and a history of everything that happened to it.

  RUN/.lock           flock'ed by the one process training this run (a second `train`, `--resume` included, refuses)
  RUN/config.json     the run's config, written last when the run is created (its presence marks a run)
  RUN/metrics.jsonl   one row per log interval; rows after the checkpoint a run resumes from are dropped
  RUN/history.jsonl   events: started, resumed, config changes, skipped non-finite steps, rollbacks, interrupts
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_text, clean_stale_temps
from ..errors import ConfigError, RunLockedError
from .checkpoint import checkpoint_dir, list_checkpoints

LOCK, CONFIG, METRICS, HISTORY = ".lock", "config.json", "metrics.jsonl", "history.jsonl"


class RunLock:
    """An exclusive advisory lock (flock) on RUN/.lock, held while a process trains the run; released when the
    process ends, however it ends, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise RunLockedError naming the holder's pid; creates the run directory."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--out {self.run_dir} is a file, not a run directory")
        for parent in self.run_dir.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ConfigError(f"--out {self.run_dir}: {parent} is a file, not a folder")
                break
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {self.run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"{self.run_dir} is being trained by another process (pid {holder}); "
                                     "one writer per run: wait for it to finish or stop it") from None
            raise ConfigError(f"cannot lock {self.run_dir / LOCK}: {e.strerror or e}") from None
        self.fd = fd
        return self

    def mark(self) -> None:
        """Write this process's pid into the lock file, for the message a second writer gets (called once the run is
        known to be trainable, so that a refused command leaves every byte of the run as it was)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it would race with a process about to lock it)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_run_dir(run_dir: Path, resume: bool, files: tuple[str, ...] = ()) -> None:
    """Before any work: a new run needs a directory without a run in it; --resume needs a run (and its `files`)."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise ConfigError(f"--resume: {run_dir} is not a run directory (no {CONFIG})")
        for name in files:
            if not (run_dir / name).is_file():
                raise ConfigError(f"--resume: {run_dir / name} is missing (the run's codec weights)")
    elif (run_dir / CONFIG).exists() or list_checkpoints(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")


def prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, files: dict[str, bytes] | None = None) -> None:
    """Create a new run directory (with `files`, e.g. a codec's weights), or check an existing one for --resume;
    never overwrite a run. config.json is written last: its presence marks a complete run directory. A resumed run
    keeps its config.json until its first checkpoint (`sync_config`), so a resume that fails changes nothing."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, tuple(files or {}) if resume else ())
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name, data in (files or {}).items():
            atomic_write_bytes(run_dir / name, data)
    (run_dir / "samples").mkdir(exist_ok=True)
    if not resume:
        sync_config(run_dir, config)


def sync_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Make RUN/config.json show `config` (the config of the newest checkpoint), rewriting it only if it differs."""
    text = json.dumps(config, indent=2)
    path = Path(run_dir) / CONFIG
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Remove the temporary files and folders a killed writer left in the run (checkpoints, config, metrics, grids,
    EMA snapshots and their reconstructions)."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, checkpoint_dir(run_dir), run_dir / "samples", run_dir / "eval", run_dir / "ema_snapshots",
                   run_dir / "posthoc_ema"):
        removed += clean_stale_temps(folder)
    return removed


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; a torn or garbled line (a kill mid-write) is skipped, not fatal."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric rows up to `step` (those after it belong to the part of a killed run that is redone)."""
    if not Path(path).exists():
        return
    keep = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def append_jsonl(path: Path, row: dict[str, Any], sync: bool = False) -> None:
    """Append one JSON line (fsync'ed if `sync`)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())


def fsync_file(path: Path) -> None:
    """Flush a file appended to line by line (metrics.jsonl) to disk, e.g. at checkpoint time."""
    if Path(path).exists():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def record(run_dir: Path, event: str, step: int, **fields: Any) -> None:
    """Append an event to RUN/history.jsonl, durably: what happened to the run, when, at which step."""
    append_jsonl(Path(run_dir) / HISTORY, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, "step": step,
                                           **fields}, sync=True)


__all__ = ["CONFIG", "HISTORY", "LOCK", "METRICS", "RunLock", "append_jsonl", "check_run_dir", "clean_run_dir",
           "fsync_file", "prepare_run_dir", "read_jsonl", "record", "sync_config", "truncate_metrics"]
