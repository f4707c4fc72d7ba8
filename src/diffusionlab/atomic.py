"""Atomic file writes: a unique temporary file in the same folder, fsync, then rename over the target.

A reader sees the old file or the new one, never a torn one, and a crash mid-write leaves the old file intact
(rename is atomic on POSIX). Every file the library writes goes through here (checkpoints write whole folders
the same way: training/checkpoint.py).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` all or nothing; creates the parent folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8) to `path` all or nothing."""
    return atomic_write_bytes(path, text.encode())


__all__ = ["atomic_write_bytes", "atomic_write_text"]
