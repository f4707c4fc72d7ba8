"""Input checks that run before any work: config fields typed by their dataclass annotations, and memory estimates.

`check_value` and `check_fields` read a field's type from its annotation (int is a whole number and never a bool;
float is an int or a float and finite; X | None also takes null; tuple[float, float] is a list of exactly two;
tuple[int, ...] a list of any length), apply an optional `Range` to every number in it, and answer a bad value with
one line naming the field, what it must be, and what it got. An unknown key is named with the nearest known one.

`require_memory` refuses an allocation larger than the memory the system says is available (MemAvailable from
/proc/meminfo, else the free physical pages), with both numbers. The estimates are lower bounds, so nothing that
fits is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

# Bounds no real run comes near; beyond them a value is a typo, and honouring it would exhaust memory or time.
SEED_LIMIT = 2**63  # seeds are 64-bit: [0, 2^63)
MAX_IMAGE_SIDE = 16384  # pixels per image side (16k x 16k is already 1 GiB per RGB image in float32)
MAX_T = 100_000  # discrete diffusion steps / noise levels (papers use up to 4000)
MAX_SAMPLING_STEPS = 100_000  # sampling steps of any sampler
MAX_CORRECTOR_STEPS = 10_000  # pc / langevin steps per noise level


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers: [lo, hi], either end open or absent."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self, whole: bool) -> str:
        """'>= 1', '> 0', 'in [0, 1)', or '1..16384' for whole numbers."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if whole and not self.lo_open and not self.hi_open:
                return f"in {_num(lo)}..{_num(hi)}"
            return f"in {'(' if self.lo_open else '['}{_num(lo)}, {_num(hi)}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(lo)}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(hi)}"
        return ""


def at_least(lo: float, hi: float | None = None) -> Range:
    """[lo, hi] (hi optional)."""
    return Range(lo, hi)


def above(lo: float) -> Range:
    """(lo, inf)."""
    return Range(lo, lo_open=True)


UNIT = Range(0.0, 1.0, hi_open=True)  # [0, 1): probabilities, decays
SEED = Range(0, SEED_LIMIT, hi_open=True)


def _num(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        v = int(v)
        return "2^63" if v == SEED_LIMIT else str(v)
    return f"{v:g}"


def show(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (a hostile value may be huge)."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if get_origin(tp) is Union or isinstance(tp, types.UnionType):
        return get_args(tp)
    return None


def describe_type(tp: Any) -> str:
    """What a value of annotation `tp` must be, in words."""
    alts = _union_args(tp)
    if alts is not None:
        parts = [describe_type(a) for a in alts if a is not type(None)]
        return " or ".join(parts) + (" (or null)" if type(None) in alts else "")
    origin = get_origin(tp)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin in (dict, typing.Dict) or tp is dict:
        return "a JSON object"
    if origin in (list, typing.List):
        return f"a list of {_plural(get_args(tp)[0])}"
    return {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string"}.get(tp, "a value")


def _plural(tp: Any) -> str:
    return {int: "whole numbers", float: "finite numbers", str: "strings", bool: "booleans"}.get(tp, "values")


class _Bad(Exception):
    """A value does not have its annotated type (or is out of range); caught and reworded by check_value."""


def _check(value: Any, tp: Any, rng: Range | None, choices: Iterable[Any] | None) -> Any:
    if tp is Any:
        return value
    alts = _union_args(tp)
    if alts is not None:
        if value is None and type(None) in alts:
            return None
        for alt in alts:
            if alt is type(None):
                continue
            try:
                return _check(value, alt, rng, choices)
            except _Bad:
                continue
        raise _Bad
    origin = get_origin(tp)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _Bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], rng, choices) for v in value)
        if len(value) != len(args):
            raise _Bad
        return tuple(_check(v, a, rng, choices) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        return [_check(v, get_args(tp)[0], rng, choices) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Bad
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad
    elif tp is float:
        # An int beyond the float range (JSON allows 1e400 written out in digits) would overflow where it is used.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= sys.float_info.max:
            raise _Bad
    elif tp is str:
        if not isinstance(value, str):
            raise _Bad
    if choices is not None and value not in tuple(choices):
        raise _Bad
    if rng is not None and tp in (int, float) and value not in rng:
        raise _Bad
    return value


def check_value(value: Any, tp: Any, name: str, rng: Range | None = None, choices: Iterable[Any] | None = None) -> Any:
    """`value` if it has type `tp` (and lies in `rng`, among `choices`), normalised (lists of a tuple type become
    tuples); else a one-line ConfigError: `NAME must be WHAT, got VALUE`."""
    try:
        return _check(value, tp, rng, choices)
    except _Bad:
        pass
    what = describe_type(tp)
    whole = int in _scalars(tp)
    if rng is not None and (d := rng.describe(whole)):
        what = what.replace(" (or null)", "") + f" {d}" + (" (or null)" if "(or null)" in what else "")
    if choices is not None:
        what = f"one of {', '.join(map(str, choices))}"
    raise ConfigError(f"{name} must be {what}, got {show(value)}")


def _scalars(tp: Any) -> set[Any]:
    alts = _union_args(tp)
    if alts is not None:
        return set().union(*(_scalars(a) for a in alts))
    if get_origin(tp) in (tuple, list):
        return set().union(*(_scalars(a) for a in get_args(tp) if a is not Ellipsis))
    return {tp}


def suggest(key: str, known: Iterable[str]) -> str:
    """' (did you mean 'lr'?)' for the nearest known name, or ''."""
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(keys: Iterable[Any], known: Iterable[str], where: str) -> None:
    """A one-line ConfigError naming the first unknown key (and the nearest known one), if any."""
    known = list(known)
    unknown = sorted((k for k in keys if k not in known), key=str)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown key {str(unknown[0])!r} in {where}{suggest(unknown[0], known)}{more}")


def field_types(cls: type) -> dict[str, Any]:
    """name -> resolved annotation of every dataclass field of `cls`."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_fields(cls: type, values: dict[str, Any], section: str | None, ranges: dict[str, Range] | None = None,
                 choices: dict[str, Iterable[Any]] | None = None) -> dict[str, Any]:
    """`values` (a subset of the dataclass `cls`'s fields) type-checked and normalised; unknown keys, wrong types,
    NaN/inf and values out of `ranges` are one-line ConfigErrors named `section.field`."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{section}' must be a JSON object, got {show(values)}")
    types_ = field_types(cls)
    reject_unknown(values, types_, f"config section '{section}'" if section else f"{cls.__name__}")
    ranges, choices = ranges or {}, choices or {}
    prefix = f"{section}." if section else ""
    return {k: check_value(v, types_[k], prefix + k, ranges.get(k), choices.get(k)) for k, v in values.items()}


def check_instance(obj: Any, section: str | None, ranges: dict[str, Range] | None = None,
                   choices: dict[str, Iterable[Any]] | None = None) -> None:
    """`check_fields` on every field of a dataclass instance (one built in code rather than from a file)."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for k, v in check_fields(type(obj), values, section, ranges, choices).items():
        object.__setattr__(obj, k, v)


def available_memory() -> int | None:
    """Bytes the system can give this process now: MemAvailable (Linux), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(nbytes: float) -> str:
    """Bytes as GiB with a sensible number of digits."""
    g = nbytes / 2**30
    return f"{g:,.0f}" if g >= 100 else f"{g:.2g}" if g < 1 else f"{g:.1f}"


def require_memory(nbytes: float, subject: str, what: str) -> None:
    """A one-line ConfigError when `nbytes` (a lower bound of what `subject` allocates for `what`) cannot fit."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ConfigError(f"{subject} needs ~{gib(nbytes)} GiB for {what}, {gib(avail)} GiB available")


def images_bytes(n: int, *shapes: tuple[int, ...], bytes_each: int = 4) -> int:
    """Bytes of n images of each shape in `shapes` (float32 unless told)."""
    return n * sum(math.prod(s) for s in shapes) * bytes_each


def sampling_bytes(n: int, model_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> int:
    """A lower bound of what drawing n samples holds at once: x_T for all of them (float32, model space), the decoded
    images, their concatenation and clamp (float32), and the uint8 result."""
    return n * (4 * math.prod(model_shape) + 12 * math.prod(image_shape) + math.prod(image_shape))


__all__ = ["MAX_CORRECTOR_STEPS", "MAX_IMAGE_SIDE", "MAX_SAMPLING_STEPS", "MAX_T", "Range", "SEED", "SEED_LIMIT",
           "UNIT", "above", "at_least", "available_memory", "check_fields", "check_instance", "check_value",
           "describe_type", "field_types", "gib", "images_bytes", "reject_unknown", "require_memory", "sampling_bytes",
           "show", "suggest"]
