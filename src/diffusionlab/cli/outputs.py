"""Output paths, checked before any work: the folder exists (or may be created), is a folder and can be written, and
an existing output is replaced only with --overwrite.

Without these checks a read-only folder, /proc/x.npz or a path under a file failed with an internal error after all
the sampling, and an earlier result was silently replaced.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError


def add_overwrite_flag(p: argparse.ArgumentParser, what: str = "the output file") -> None:
    """--overwrite: replace an existing output instead of refusing it."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists (default: refuse)")


def _existing_folder(folder: Path, flag: str, make_parents: bool) -> Path:
    """The folder itself if it exists, else (with `make_parents`) its nearest existing ancestor; a file on the way
    is named as such."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag}: {p} is a file, not a folder")
    if p != folder and not make_parents:
        raise ConfigError(f"{flag}: output folder does not exist: {folder}")
    return p


def _check_writable(folder: Path, flag: str) -> None:
    """Create and remove a probe file in `folder` (os.access says yes to root on a read-only mount or in /proc)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".diffusionlab-write-test-", dir=folder)
    except OSError as e:
        raise ConfigError(f"{flag}: cannot write in {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: Path, flag: str, overwrite: bool, *, companions: Iterable[Path] = (),
                      make_parents: bool = False) -> Path:
    """`path` if it can be written: not a folder, its folder exists (or can be made, with `make_parents`) and is
    writable, and neither it nor its `companions` (e.g. the PNG grid beside a .npz) exists unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a folder, not a file")
    _check_writable(_existing_folder(path.parent, flag, make_parents), flag)
    if not overwrite:
        for p in (path, *companions):
            if p.exists():
                raise ConfigError(f"{flag}: {p} already exists; pass --overwrite to replace it")
    return path


def check_output_folder(path: Path, flag: str, overwrite: bool, owned: Iterable[str]) -> Path:
    """`path` as an output folder: a folder or nothing yet, under a writable folder, not already holding one of the
    files `owned` (what the command writes) unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not a folder")
    _check_writable(_existing_folder(path, flag, make_parents=True), flag)
    if not overwrite:
        for name in owned:
            if (path / name).exists():
                raise ConfigError(f"{flag}: {path} already holds {name}; pass --overwrite to replace it")
    return path


__all__ = ["add_overwrite_flag", "check_output_file", "check_output_folder"]
