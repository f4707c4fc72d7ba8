"""Argument types and the argument groups several commands share. Every choice list is the library's own constant."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from .. import validation as v
from ..errors import ConfigError
from .outputs import check_output_file


def positive_int(s: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number in lo..hi."""

    def parse(s: str) -> int:
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number in {lo}..{hi}, got {s!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected a whole number in {lo}..{hi}, got {value}")
        return value

    return parse


def non_negative_float(s: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return value


def positive_float(s: str) -> float:
    """A finite number > 0."""
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return value


def seed(s: str) -> int:
    """A random seed: a whole number in [0, 2^63)."""
    try:
        value = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed (a whole number in [0, 2^63)), got {s!r}") from None
    if not 0 <= value < v.SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, 2^63), got {value}")
    return value


def thread_count(s: str) -> int:
    """A number of CPU threads: 1 to threads.MAX_THREADS."""
    from ..threads import MAX_THREADS

    value = positive_int(s)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {value}")
    return value


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """--threads, which every command takes (threads.py)."""
    p.add_argument("--threads", type=thread_count, default=None,
                   help="CPU threads (default: one per physical core, or OMP_NUM_THREADS; fewer when other processes "
                        "keep cores busy, with a warning)")


def sigma_rel_list(s: str) -> list[float]:
    """Comma-separated relative EMA lengths sigma_rel in (0, 1/sqrt(12)], e.g. 0.05,0.1 (training/ema.py)."""
    from ..training.ema import SIGMA_REL_MAX

    try:
        values = [float(x) for x in s.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.05,0.1, got {s!r}") from None
    bad = [v for v in values if not 0 < v <= SIGMA_REL_MAX]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected sigma_rel values in (0, {SIGMA_REL_MAX:.4f}] (1/sqrt(12) is the "
                                         f"uniform average of all of training), got {s!r}")
    return values


def int_list(s: str) -> list[int]:
    """Comma-separated whole numbers, e.g. 1,2,2."""
    try:
        return [int(x) for x in s.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {s!r}") from None


def class_id(s: str) -> int | str:
    """A class index or 'all'."""
    if s == "all":
        return s
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class id (a whole number) or 'all', got {s!r}") from None


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    """The sampler choice and its options (`sampling.SamplerOptions`), shared by `sample` and `evaluate --fid`."""
    from ..processes.vlb import VARIANCES
    from ..samplers.sigmas import SPACINGS as SIGMA_SPACINGS
    from ..sampling import SAMPLER_NAMES
    from ..schedules import SPACINGS

    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=None, metavar="NAME",
                   help=f"one of {', '.join(SAMPLER_NAMES)} (default: the model's own, ddim for DDPM)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps N (default: T for ddpm, 50 otherwise; NFE: 2N - 1 for heun, N (M + 1) for pc)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (0: deterministic)")
    p.add_argument("--variance", choices=VARIANCES, default=None,
                   help="DDPM sigma_t^2 (default: the model's own; 'learned' needs an iDDPM model)")
    p.add_argument("--spacing", choices=SPACINGS, default="uniform", help="ddpm/ddim step spacing when respacing")
    p.add_argument("--sigma-spacing", choices=SIGMA_SPACINGS, default="karras",
                   help="euler/heun/dpmpp2m/sde/pc noise levels: Karras rho=7 (default), log-uniform, uniform in the "
                        "model's time from sigma 80, or diffusers' linspace timesteps (DDPM)")
    p.add_argument("--snr", type=positive_float, default=0.16, help="pc: signal-to-noise ratio r of the Langevin corrector")
    p.add_argument("--corrector-steps", type=int, default=None,
                   help="pc: corrector steps M per level (default 1); langevin: steps T per level (default 100)")
    p.add_argument("--langevin-eps", type=positive_float, default=2e-5,
                   help="langevin: eps of the step size eps sigma_i^2 / sigma_L^2 (default 2e-5)")
    p.add_argument("--rtol", type=positive_float, default=1e-3, help="ode-adaptive: relative and absolute tolerance")


def sampler_options(args: argparse.Namespace) -> Any:
    """The `SamplerOptions` the command line asks for (one-line errors for values out of range)."""
    from ..sampling import SamplerOptions

    return SamplerOptions(eta=args.eta, variance=getattr(args, "variance", None), spacing=args.spacing,
                          sigma_spacing=args.sigma_spacing, clip_x0=not args.no_clip, snr=args.snr,
                          corrector_steps=args.corrector_steps, langevin_eps=args.langevin_eps, rtol=args.rtol)


def sampler_and_steps(args: argparse.Namespace, run: Any) -> tuple[str, int]:
    """The sampler and step count asked for, else the run's recommended ones, else the family's defaults
    (`LoadedRun.sampler_and_steps`); a step (or corrector step) count that the sampler cannot use or that is absurd
    for any sampler is a one-line error, before any work."""
    from ..sampling import SamplerOptions, sampler_spec

    sampler, steps = run.sampler_and_steps(args.sampler, args.steps, getattr(args, "sigma_spacing", None))
    spec = sampler_spec(sampler)
    corrector = getattr(args, "corrector_steps", None)
    if corrector is not None:
        spec.check(sampler, SamplerOptions(corrector_steps=corrector))
        if corrector > v.MAX_CORRECTOR_STEPS:
            raise ConfigError(f"--corrector-steps {corrector} is more than any sampler needs "
                              f"(at most {v.MAX_CORRECTOR_STEPS:,})")
    return sampler, steps


def check_sampling_memory(n: int, run: Any, flag: str = "--n") -> None:
    """Refuse n samples of a run whose images (and their latents) cannot fit in memory, before the model runs."""
    v.require_memory(v.sampling_bytes(n, run.model_shape, run.image_shape), f"{flag} {n}", "the images")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--no-clip, --no-ema, --checkpoint, --batch-size: how a trained run is loaded and run."""
    p.add_argument("--no-clip", action="store_true", help="do not clip the x0 prediction to the data range")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--checkpoint", metavar="DIR", help="a specific checkpoint folder (default: the newest)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    add_precision_flag(p)


def add_precision_flag(p: argparse.ArgumentParser) -> None:
    """--mixed-precision for sampling: the network under bf16 autocast (training/precision.py)."""
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default="auto",
                   help="the network in bf16 autocast: auto (the default) where the CPU multiplies bf16 natively, no "
                        "(float32) or bf16; the sampler's arithmetic stays float32")


def add_guidance_flags(p: argparse.ArgumentParser) -> None:
    """--class, --guidance-scale, --classifier, --classifier-scale (docs/maths.md section 4)."""
    p.add_argument("--class", dest="class_id", type=class_id, default=None, metavar="K|all",
                   help="class to generate (all: classes 0, 1, 2, ... in turn); needs a class-conditional run or --classifier")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="S",
                   help="classifier-free guidance eps_null + S (eps_c - eps_null): S = 1 (default) plain conditional, "
                        "S = 0 unconditional, S > 1 stronger; costs two network passes per step")
    p.add_argument("--classifier", metavar="DIR", help="noisy classifier from `train-classifier`, for classifier guidance")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a text run: the caption to draw (repeat it for several; the samples cycle through them)")
    p.add_argument("--prompt-file", metavar="FILE", help="a text run: prompts, one per line")
    p.add_argument("--classifier-scale", type=float, default=1.0, metavar="W",
                   help="classifier guidance eps - W sigma_t grad log f(y | x_t) (default 1)")


def npz_out(out: Any, overwrite: bool = False, companions: tuple[str, ...] = (".png",)) -> Any:
    """Check an output .npz path before any work: suffix, an existing writable folder, and no existing file (nor its
    companions, e.g. the .png grid beside it) unless `overwrite`."""
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    return check_output_file(out, "--out", overwrite, companions=[out.with_suffix(c) for c in companions])


__all__ = ["add_guidance_flags", "add_model_flags", "add_sampler_options", "check_sampling_memory", "class_id",
           "int_list", "npz_out", "positive_float", "positive_int", "sampler_and_steps", "sampler_options", "seed",
           "sigma_rel_list"]
