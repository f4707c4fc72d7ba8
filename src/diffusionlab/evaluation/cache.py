"""Where evaluation caches what it trains or downloads once: domain extractors, reference features, FID weights."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$DIFFUSIONLAB_CACHE, or ~/.cache/diffusionlab."""
    env = os.environ.get("DIFFUSIONLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffusionlab"


def cache_root(given: str | os.PathLike | None) -> Path:
    """`given` (expanded) if set, else `cache_dir()`."""
    return Path(given).expanduser() if given is not None else cache_dir()


__all__ = ["cache_dir", "cache_root"]
