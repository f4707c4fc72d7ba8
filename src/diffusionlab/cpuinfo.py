"""What the kernel's /proc/cpuinfo says about this CPU: one reader for the vendor and the instruction-set flags."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_field(name: str, cpuinfo: Path | str = CPUINFO) -> str | None:
    """The value of the first `name : value` line of `cpuinfo` (the first CPU's), or None where it cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None
