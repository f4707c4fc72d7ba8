"""`diffusionlab upsample`: super-resolve low-resolution images with a super-resolution run (any sampler), and the
cascade behind `sample BASE --then UPSAMPLER` (GLIDE, DALL-E 2, CDM: a small base model, then upsamplers)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .args import (add_model_flags, add_sampler_options, check_sampling_memory, npz_out, sampler_and_steps,
                   sampler_options, seed)
from .outputs import add_overwrite_flag

if TYPE_CHECKING:
    import torch

    from ..runs import LoadedRun


def add_parser(sub: Any) -> None:
    """The `upsample` sub-command."""
    u = sub.add_parser("upsample", help="super-resolve low-resolution images with a --task superres run",
                       description="Draw one high-resolution image per low-resolution input from a super-resolution "
                                   "run (SR3 / cascaded diffusion), with any sampler.")
    u.add_argument("run_dir", metavar="RUN_DIR", help="a run trained with --task superres")
    u.add_argument("--images", required=True, metavar="FILE|DIR",
                   help="low-resolution images: a samples .npz, a .npy, a picture, or a folder of pictures")
    add_sampler_options(u)
    u.add_argument("--seed", type=seed, default=0, help="random seed in [0, 2^63) (default 0)")
    add_aug_level(u)
    u.add_argument("--out", metavar="FILE.npz", help="output file (default: RUN_DIR/samples/upsample-SAMPLER-STEPS-seedS.npz)")
    add_overwrite_flag(u, "the .npz (and its .png grid)")
    add_model_flags(u)


def add_aug_level(p: argparse.ArgumentParser) -> None:
    """--aug-level: the conditioning augmentation level of an upsampler at sampling time."""
    p.add_argument("--aug-level", type=float, default=None, metavar="S",
                   help="noise the low-resolution condition to level s in [0, 1) before upsampling (CDM's conditioning "
                        "augmentation; default: the run's task.aug_level)")


def load_upsampler(run_dir: str, args: argparse.Namespace, flag: str = "RUN_DIR") -> LoadedRun:
    """A super-resolution run (EMA or raw weights); one-line error for any other run."""
    from ..runs import load_run

    checkpoint = getattr(args, "checkpoint", None) if flag == "RUN_DIR" else None
    run = load_run(Path(run_dir), Path(checkpoint) if checkpoint else None, use_ema=not args.no_ema,
                   mixed_precision=getattr(args, "mixed_precision", "auto"))
    if run.superres is None:
        raise ConfigError(f"{flag} {run_dir} draws images from noise, it does not upsample: give a run trained with "
                          "--task superres")
    return run


def aug_level(args: argparse.Namespace, run: LoadedRun) -> float:
    """--aug-level, or the run's own sampling level; one-line error outside [0, 1)."""
    level = run.superres.aug_level if args.aug_level is None else args.aug_level  # type: ignore[union-attr]
    if not 0.0 <= level < 1.0:
        raise ConfigError(f"--aug-level must be in [0, 1), got {level}")
    return level


def upsample_to_file(run: LoadedRun, lowres_u8: torch.Tensor, out: Path, sampler: str, steps: int, options: Any,
                     level: float, seed_: int, batch_size: int) -> tuple[Path, int, float]:
    """Upsample uint8 images into `out` (streamed); its grid pairs each input (bicubic, left) with the model's
    image (right). Returns the grid, the NFE per image and the seconds."""
    import torch

    from ..data import from_model_range, to_model_range
    from ..superres import bicubic_upsample, upsample
    from ..viz import SampleWriter

    factor = run.superres.factor  # type: ignore[union-attr]
    n, shown = len(lowres_u8), min(len(lowres_u8), 32)
    writer, firsts = SampleWriter(out, n, run.image_shape), []
    lowres = to_model_range(lowres_u8)

    def keep(images: torch.Tensor) -> None:
        u8 = from_model_range(images)
        if sum(len(x) for x in firsts) < shown:
            firsts.append(u8)
        writer.write(u8)

    t0 = time.perf_counter()
    try:
        res = upsample(run.denoiser, run.process, run.model_shape, lowres, sampler, steps, level=level, seed=seed_,
                       options=options, codec=run.codec, batch_size=batch_size, progress=True, on_batch=keep)
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - t0
    bicubic = from_model_range(bicubic_upsample(lowres[:shown], factor))
    pairs = torch.stack([bicubic, torch.cat(firsts)[:shown]], dim=1).flatten(0, 1)  # bicubic, model, bicubic, ...
    return writer.close(grid_images=pairs, nrow=8), res.nfe, seconds


def run(args: argparse.Namespace) -> int:
    """`diffusionlab upsample`."""
    from ..image_files import load_images

    options = sampler_options(args)
    if args.out:
        npz_out(Path(args.out), args.overwrite)
    up = load_upsampler(args.run_dir, args)
    level = aug_level(args, up)
    lowres = load_images(args.images, up.lowres_shape, role="this upsampler takes")  # type: ignore[arg-type]
    sampler, steps = sampler_and_steps(args, up)
    check_sampling_memory(len(lowres), up, "--images with")
    out = npz_out(Path(args.out) if args.out else
                  Path(args.run_dir) / "samples" / f"upsample-{sampler}-{steps}-seed{args.seed}.npz", args.overwrite)
    grid, nfe, seconds = upsample_to_file(up, lowres, out, sampler, steps, options, level, args.seed, args.batch_size)
    print(f"{len(lowres)} images upsampled x{up.superres.factor} ({'x'.join(map(str, up.lowres_shape[1:]))} -> "  # type: ignore[union-attr, index]
          f"{'x'.join(map(str, up.image_shape[1:]))}), {sampler} {steps} steps, NFE {nfe} per image, aug level "
          f"{level:g}, {seconds:.1f} s (step {up.step} {'raw' if args.no_ema else 'EMA'} weights)")
    print(f"samples: {out}")
    print(f"grid:    {grid} (bicubic | model)")
    return 0


def add_cascade_flags(p: argparse.ArgumentParser) -> None:
    """`sample BASE --then UPSAMPLER`: the flags of the cascade's second stage."""
    from ..sampling import SAMPLER_NAMES
    from .args import positive_int

    p.add_argument("--then", metavar="UPSAMPLER_RUN",
                   help="a cascade: upsample the samples with this --task superres run (its low-resolution size must "
                        "be this run's image size)")
    p.add_argument("--then-sampler", choices=SAMPLER_NAMES, default=None, metavar="NAME",
                   help="the upsampler's sampler (default: its model's own)")
    p.add_argument("--then-steps", type=positive_int, default=None, help="the upsampler's sampling steps")
    add_aug_level(p)


def cascade_stage(base: LoadedRun, args: argparse.Namespace) -> tuple[LoadedRun, str, int, float] | None:
    """The upsampler of `sample --then`, its sampler, steps and level, checked against the base run before any work."""
    if not args.then:
        for flag, value in (("--then-sampler", args.then_sampler), ("--then-steps", args.then_steps),
                            ("--aug-level", args.aug_level)):
            if value is not None:
                raise ConfigError(f"{flag} sets the upsampler of a cascade: it goes with --then UPSAMPLER_RUN")
        if base.superres is not None:
            raise ConfigError(f"{args.run_dir} is a super-resolution run: upsample images with `diffusionlab upsample "
                              f"{args.run_dir} --images FILE`, or use it as a cascade's second stage: "
                              f"`diffusionlab sample BASE_RUN --then {args.run_dir}`")
        return None
    if base.superres is not None:
        raise ConfigError(f"{args.run_dir} is a super-resolution run: a cascade's base draws from noise")
    up = load_upsampler(args.then, args, "--then")
    if tuple(base.image_shape) != tuple(up.lowres_shape):  # type: ignore[arg-type]
        raise ConfigError(f"the base run draws {'x'.join(map(str, base.image_shape))} images and the upsampler "
                          f"{args.then} takes {'x'.join(map(str, up.lowres_shape))} (CxHxW)")  # type: ignore[arg-type]
    stage = argparse.Namespace(**{**vars(args), "sampler": args.then_sampler, "steps": args.then_steps})
    sampler, steps = sampler_and_steps(stage, up)
    return up, sampler, steps, aug_level(args, up)


__all__ = ["add_cascade_flags", "add_parser", "aug_level", "cascade_stage", "load_upsampler", "run", "upsample_to_file"]
