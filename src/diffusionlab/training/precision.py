"""Mixed precision: what `mixed_precision = "auto"` (the default) chooses on this machine, and why.

bf16 autocast pays only where the hardware multiplies bf16 natively: on a CPU with AVX512-BF16 (AMD Zen 4, Intel
Cooper Lake and later) or AMX, oneDNN runs the convolutions in bf16 (BENCHMARKS.md, "UNet vs diffusers UNet2DModel");
without those instructions it emulates them and is slower than float32. The choice:

| device | auto chooses |
|---|---|
| CUDA GPU | bf16 where the GPU supports it, else fp16 (with Accelerate's loss scaling) |
| CPU with `avx512_bf16` or `amx_bf16` | bf16 |
| any other CPU, Apple MPS | no (float32) |

The resolved choice, never "auto", is what a run's config.json stores, so a run resumed on another machine keeps the
precision it was trained in (a resumed run continues bit-exactly only within one precision). The environment variable
DIFFUSIONLAB_MIXED_PRECISION=no|bf16|fp16 overrides what auto chooses (the test suite pins `no`, so that its numbers
are the same on every CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..cpuinfo import CPUINFO, cpuinfo_field
from ..errors import ConfigError

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the bf16 multiply instructions
ENV = "DIFFUSIONLAB_MIXED_PRECISION"


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run trains in ("no", "bf16" or "fp16") and the one-line reason."""

    mixed_precision: str
    reason: str

    def __str__(self) -> str:
        name = {"no": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.mixed_precision]
        return f"{name} ({self.reason})"


def cpu_bf16_flags(cpuinfo: Path | None = None) -> tuple[str, ...]:
    """The native-bf16 instruction sets this CPU has (empty on an AVX2-only CPU or where this cannot be read); with
    `cpuinfo`, the ones that file lists."""
    if cpuinfo is None:
        try:  # torch's own CPUID probe (a private API, hence guarded), else the kernel's list of flags
            return tuple(name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"),
                                                  ("amx_bf16", "_is_amx_tile_supported")) if getattr(torch.cpu, probe)())
        except (AttributeError, RuntimeError):
            cpuinfo = CPUINFO
    flags = set((cpuinfo_field("flags", cpuinfo) or "").split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def resolve_mixed_precision(requested: str, device_type: str, bf16_flags: tuple[str, ...] | None = None) -> PrecisionChoice:
    """The precision a run on `device_type` ("cpu", "cuda", "mps") trains in, given the config's request."""
    if requested not in MIXED_PRECISION:
        raise ConfigError(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {requested!r}")
    if requested != "auto":
        choice = PrecisionChoice(requested, "set in the config or on the command line")
    elif os.environ.get(ENV):
        forced = os.environ[ENV]
        if forced not in MIXED_PRECISION[1:]:
            raise ConfigError(f"{ENV} must be one of {', '.join(MIXED_PRECISION[1:])}, got {forced!r}")
        choice = PrecisionChoice(forced, f"auto, set by {ENV}")
    elif device_type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        choice = PrecisionChoice("bf16" if bf16 else "fp16", f"auto: this GPU {'has' if bf16 else 'lacks'} bf16")
    elif device_type == "cpu":
        flags = cpu_bf16_flags() if bf16_flags is None else bf16_flags
        choice = (PrecisionChoice("bf16", f"auto: this CPU multiplies bf16 natively ({', '.join(flags)})") if flags
                  else PrecisionChoice("no", "auto: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"))
    else:
        choice = PrecisionChoice("no", f"auto: float32 on {device_type}")
    if choice.mixed_precision == "fp16" and device_type != "cuda":
        raise ConfigError("fp16 mixed precision needs a CUDA GPU; use bf16 on a CPU")
    return choice


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast(nn.Module):
    """A network evaluated under autocast in bf16 (or fp16) for sampling; its output comes back in float32, so the
    sampler's own arithmetic (the update rules, in float32 or float64) is untouched."""

    def __init__(self, net: nn.Module, mixed_precision: str):
        super().__init__()
        self.net, self.dtype = net, DTYPES[mixed_precision]

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        """net(x, ...) under autocast, returned as float32."""
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, *args, **kwargs)
        return out.float()


def for_sampling(net: nn.Module, mixed_precision: str, device_type: str = "cpu") -> tuple[nn.Module, PrecisionChoice]:
    """The network as samplers should call it at `mixed_precision` ("auto" resolved as for training)."""
    choice = resolve_mixed_precision(mixed_precision, device_type)
    return (net if choice.mixed_precision == "no" else Autocast(net, choice.mixed_precision)), choice


__all__ = ["Autocast", "DTYPES", "ENV", "MIXED_PRECISION", "for_sampling", "NATIVE_BF16_FLAGS", "PrecisionChoice", "cpu_bf16_flags",
           "resolve_mixed_precision"]
