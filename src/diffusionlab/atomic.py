"""Atomic file writes: a unique temporary file in the same folder, fsync, then rename over the target.

A reader sees the old file or the new one, never a torn one, and a crash mid-write leaves the old file intact
(rename is atomic on POSIX). Every file the library writes goes through here (checkpoints write whole folders
the same way: training/checkpoint.py).

Temporary names carry the writer's pid (`.NAME.PID-HEX.tmp`), so two processes writing to one place never collide,
and a later run can tell a dead writer's leftover (safe to delete) from a live writer's file in progress.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import uuid
from pathlib import Path

# A temporary name as written by `temp_name` (file or folder): the pid of the writer is the first group.
_TEMP = re.compile(r"^\.(?:.+)\.(\d+)-[0-9a-f]{8,32}\.tmp$")


def temp_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of `path`, unique to this process and this call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a folder's entries (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` all or nothing; creates the parent folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
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


def atomic_write_folder(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write several files that belong together (weights and their JSON) as one folder, renamed into place at once;
    an existing folder at `path` is exchanged for the new one atomically, so there is never a moment without one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


_RENAME_EXCHANGE = 2  # linux/fs.h


def _renameat2():  # type: ignore[no-untyped-def]
    """glibc's renameat2, or None where the C library lacks it (macOS, old glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_AT_FDCWD = -100


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False  # EINVAL/ENOSYS (file system or kernel without the flag): the caller falls back


def replace_folder(new: Path, final: Path) -> None:
    """Move folder `new` to `final`. An existing `final` is exchanged atomically and the old one deleted; where the
    system cannot exchange, the old folder is renamed aside first (`recover_folder` puts it back after a crash)."""
    if not final.exists():
        os.rename(new, final)
    elif exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old contents
    else:
        aside = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex}.old")
        os.rename(final, aside)
        os.rename(new, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(final.parent)


def _dead(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in `folder` left by writers that are no longer running (a killed run);
    put back a folder a crash left renamed aside. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = re.match(r"^\.(.+)\.(\d+)-[0-9a-f]{8,32}\.old$", p.name)
        if m and _dead(int(m.group(2))):
            original = folder / m.group(1)
            if not original.exists():  # killed between the two renames of `replace_folder`: the old one is the one
                os.rename(p, original)
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            continue
        m = _TEMP.match(p.name)
        if m and _dead(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


__all__ = ["atomic_write_bytes", "atomic_write_folder", "atomic_write_text", "clean_stale_temps", "exchange",
           "fsync_dir", "replace_folder", "temp_name"]
