"""The one table of model families, `METHODS`: it builds processes, checks config sections and names CLI choices.

Adding a family is one module declaring a `Process` class (base.py) and one line here.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..validation import show, suggest
from .base import Process, Setting
from .ddpm import GaussianDiffusion
from .flow import FlowMatching
from .ncsn import NCSN
from .vesde import VESDE
from .vpsde import VPSDE

METHODS: dict[str, type[Process]] = {cls.method: cls for cls in (GaussianDiffusion, FlowMatching, NCSN, VPSDE, VESDE)}  # type: ignore[misc]


def family(method: str) -> type[Process]:
    """The process class of `method`, or a one-line ConfigError listing the methods."""
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"unknown method {show(method)}{suggest(str(method), METHODS)}; choose from {', '.join(METHODS)}")
    return METHODS[method]


def defaults(method: str) -> dict[str, Any]:
    """The settings of `method` at their defaults."""
    return {s.name: s.default for s in family(method).settings}


def owners(name: str) -> list[str]:
    """The methods that have a setting called `name`."""
    return [m for m, cls in METHODS.items() if any(s.name == name for s in cls.settings)]


def all_settings() -> dict[str, list[tuple[str, Setting]]]:
    """Every setting name of every family, with (method, Setting) for each family that has it (for the CLI)."""
    out: dict[str, list[tuple[str, Setting]]] = {}
    for m, cls in METHODS.items():
        for s in cls.settings:
            out.setdefault(s.name, []).append((m, s))
    return out


def check_settings(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` completed with the family's defaults and type-checked; a setting of another family is an error."""
    own = {s.name: s for s in family(method).settings}
    for key in values:
        if key not in own:
            users = owners(key)
            if not users:
                raise ConfigError(f"unknown process setting {show(key)}{suggest(str(key), own)} (settings of {method}: "
                                  f"{', '.join(own) or 'none'})")
            raise ConfigError(f"{key} is a setting of {' / '.join(users)}, not of method {method}")
    return {name: s.check(values.get(name, s.default), method) for name, s in own.items()}


def build_process(method: str, settings: dict[str, Any] | None = None) -> Process:
    """The process of `method` with `settings` (defaults where unset), its values checked with one-line errors."""
    return family(method)(**check_settings(method, settings or {}))


__all__ = ["METHODS", "all_settings", "build_process", "check_settings", "defaults", "family", "owners"]
