"""`diffusionlab sample`: draw images from a trained run with any sampler, and write .npz + PNG grid (+ GIF)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .args import (add_guidance_flags, add_model_flags, add_sampler_options, check_sampling_memory, npz_out,
                   positive_int, sampler_and_steps, sampler_options, seed)
from .outputs import add_overwrite_flag
from .upsample import add_cascade_flags, cascade_stage, upsample_to_file


def add_parser(sub: Any) -> None:
    """The `sample` sub-command."""
    s = sub.add_parser("sample", help="generate images from a trained run", description="Sample from a trained run.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    add_sampler_options(s)
    s.add_argument("--seed", type=seed, default=0, help="random seed in [0, 2^63) (default 0)")
    s.add_argument("--out", metavar="FILE.npz", help="output file (default: RUN_DIR/samples/SAMPLER-STEPS-seedS.npz)")
    add_overwrite_flag(s, "the .npz (and its .png grid, .gif)")
    s.add_argument("--trajectory", action="store_true", help="also write a GIF of the denoising")
    add_model_flags(s)
    add_guidance_flags(s)
    add_cascade_flags(s)


def run(args: argparse.Namespace) -> int:
    """`diffusionlab sample`."""
    from ..data import from_model_range
    from ..runs import is_baseline_run, load_run
    from ..sampling import generate
    from ..viz import SampleWriter, save_trajectory_gif
    from .guidance import describe_guidance, guided_model

    if is_baseline_run(Path(args.run_dir)):  # a GAN, VAE or flow: one network pass per sample
        from .baseline import run_sample

        return run_sample(args)
    options = sampler_options(args)  # bad options fail before the run is loaded
    companions = (".png", ".gif") if args.trajectory else (".png",)
    if args.out:  # an output that cannot be written fails before the run is loaded, not after the sampling
        npz_out(Path(args.out), args.overwrite, companions)
    run_ = load_run(Path(args.run_dir), Path(args.checkpoint) if args.checkpoint else None, use_ema=not args.no_ema,
                   mixed_precision=getattr(args, "mixed_precision", "auto"))
    sampler, steps = sampler_and_steps(args, run_)
    stage = cascade_stage(run_, args)  # the upsampler of a cascade, checked before any work
    check_sampling_memory(args.n, run_)
    denoiser, y, tag = guided_model(run_, args, args.n)
    if stage is not None:
        if args.trajectory:
            raise ConfigError("--trajectory records one model's denoising: drop it with --then")
        check_sampling_memory(args.n, stage[0])
        return cascade(args, run_, stage, denoiser, y, tag, sampler, steps, options)
    out = npz_out(Path(args.out) if args.out else Path(args.run_dir) / "samples" / f"{sampler}-{steps}-seed{args.seed}{tag}.npz",
                  args.overwrite, companions)
    t0 = time.perf_counter()
    writer = SampleWriter(out, args.n, run_.image_shape)  # batches stream to disk: --n is not held in memory
    try:
        res = generate(denoiser, run_.process, run_.model_shape, args.n, sampler, steps, options=options,
                       seed=args.seed, y=y, codec=run_.codec, batch_size=args.batch_size,
                       trajectory_frames=40 if args.trajectory else 0, progress=True,
                       on_batch=lambda images: writer.write(from_model_range(images)))
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - t0
    # The class of every sample (--class K or all), so that a scorer need not re-derive it from the flags.
    grid = writer.close(arrays={"labels": y.cpu().numpy()} if y is not None and run_.tokenizer is None else None)
    print(f"{args.n} samples, {sampler} {steps} steps, NFE {res.nfe} per sample, {seconds:.1f} s "
          f"(step {run_.step} {'raw' if args.no_ema else 'EMA'} weights)")
    if tag:
        print(f"guidance: {describe_guidance(denoiser)}")
    print(f"samples: {out}")
    print(f"grid:    {grid}")
    if args.trajectory:
        gif = save_trajectory_gif([from_model_range(x) for x in res.trajectory_xt],
                                  [from_model_range(x) for x in res.trajectory_x0],
                                  res.trajectory_labels, out.with_suffix(".gif"))
        print(f"trajectory: {gif}")
    return 0


def cascade(args: argparse.Namespace, base: Any, stage: tuple[Any, str, int, float], denoiser: Any, y: Any, tag: str,
            sampler: str, steps: int, options: Any) -> int:
    """`sample BASE --then UP`: draw --n low-resolution images (kept beside the output as OUT-base.npz), then
    upsample each once with the upsampler's own sampler (Ho et al. 2022's cascade; GLIDE's 64 -> 256)."""
    from ..data import from_model_range
    from ..sampling import generate
    from ..viz import write_samples
    from .guidance import describe_guidance

    up, up_sampler, up_steps, level = stage
    name = f"cascade-{sampler}-{steps}-{up_sampler}-{up_steps}-seed{args.seed}{tag}.npz"
    out = npz_out(Path(args.out) if args.out else Path(args.run_dir) / "samples" / name, args.overwrite)
    base_out = npz_out(out.with_name(out.stem + "-base.npz"), args.overwrite)
    t0 = time.perf_counter()
    res = generate(denoiser, base.process, base.model_shape, args.n, sampler, steps, options=options, seed=args.seed,
                   y=y, codec=base.codec, batch_size=args.batch_size, progress=True)
    base_seconds = time.perf_counter() - t0
    lowres = from_model_range(res.images)
    write_samples(lowres, base_out)
    # The second stage gets its own stream of randomness (seed + 1), not the first stage's noise again.
    grid, nfe, up_seconds = upsample_to_file(up, lowres, out, up_sampler, up_steps, sampler_options(args), level,
                                             (args.seed + 1) % (1 << 63), args.batch_size)
    print(f"{args.n} samples, base {sampler} {steps} steps (NFE {res.nfe}) {base_seconds:.1f} s, then x"
          f"{up.superres.factor} {up_sampler} {up_steps} steps (NFE {nfe}) at aug level {level:g} {up_seconds:.1f} s")
    if tag:
        print(f"guidance: {describe_guidance(denoiser)}")
    print(f"base:    {base_out}")
    print(f"samples: {out}")
    print(f"grid:    {grid} (base, bicubic | upsampled)")
    return 0


__all__ = ["add_parser", "cascade", "run"]
