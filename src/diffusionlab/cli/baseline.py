"""The command line of the baselines (GAN, VAE, normalizing flow): `train --method gan|vae|nf` (or a baseline
preset), and what `sample` and `evaluate` do with a baseline run. Flags that only mean something for diffusion (a
sampler, its steps, guidance, a cascade) are refused in one line, before any work."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .args import positive_float, positive_int

# (flag, config section, key, type, help) -- the baselines' own settings; --base-channels, --channel-mult and --depth
# are shared with the diffusion networks (OVERRIDES in train.py) and mean the same thing here.
BASELINE_OVERRIDES: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--latent-dim", "model", "latent_dim", positive_int, "gan, vae: dimension d of z"),
    ("--likelihood", "model", "likelihood", str, "vae: the decoder p(x | z) over 256 bins: logistic (the default), "
                                                 "gaussian, or bernoulli (binarized pixels)"),
    ("--levels", "model", "levels", positive_int, "nf: Glow's levels L (squeezes; H must be a multiple of 2^L)"),
    ("--hidden-channels", "model", "hidden_channels", positive_int, "nf: width of each coupling layer's network"),
    ("--d-steps", "loss", "d_steps", positive_int, "gan: discriminator steps k per generator step"),
    ("--r1-gamma", "loss", "r1_gamma", float, "gan: gamma of the R1 penalty on real data (0: off)"),
    ("--kl-warmup-steps", "loss", "kl_warmup_steps", int, "vae: the KL weight rises linearly over these steps"),
]
# train's flags that are diffusion settings: refused for a baseline (dest -> flag)
DIFFUSION_TRAIN_FLAGS = ("process", "task", "sample", "codec")

# sample/evaluate flags that only mean something for diffusion: dest -> (flag, default)
DIFFUSION_ONLY: dict[str, tuple[str, Any]] = {
    "sampler": ("--sampler", None), "steps": ("--steps", None), "eta": ("--eta", 0.0), "variance": ("--variance", None),
    "spacing": ("--spacing", "uniform"), "sigma_spacing": ("--sigma-spacing", "karras"), "snr": ("--snr", 0.16),
    "corrector_steps": ("--corrector-steps", None), "langevin_eps": ("--langevin-eps", 2e-5), "rtol": ("--rtol", 1e-3),
    "no_clip": ("--no-clip", False), "trajectory": ("--trajectory", False), "guidance_scale": ("--guidance-scale", None),
    "classifier": ("--classifier", None), "prompt": ("--prompt", None), "prompt_file": ("--prompt-file", None),
    "classifier_scale": ("--classifier-scale", 1.0), "then": ("--then", None), "then_sampler": ("--then-sampler", None),
    "then_steps": ("--then-steps", None), "aug_level": ("--aug-level", None), "ode": ("--ode", False),
    "nll_steps": ("--nll-steps", None), "mixed_precision": ("--mixed-precision", "auto"),
}


def add_train_flags(t: argparse.ArgumentParser) -> None:
    """The baselines' own flags on `train`."""
    from ..models.vae import LIKELIHOODS

    for flag, _, _, typ, hlp in BASELINE_OVERRIDES:
        t.add_argument(flag, type=typ, default=None, choices=tuple(LIKELIHOODS) if flag == "--likelihood" else None,
                       help=hlp)
    t.add_argument("--kl-weight", type=float, default=None, help="vae: beta, the weight of the KL term (1: the ELBO)")
    t.add_argument("--disc-lr", type=positive_float, default=None, help="gan: the discriminator's learning rate")


def baseline_flags_given(args: argparse.Namespace) -> list[str]:
    """The baselines' own flags set on this command line."""
    flags = [flag for flag, *_ in BASELINE_OVERRIDES] + ["--kl-weight", "--disc-lr"]
    return [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"), None) is not None]


def is_baseline_request(args: argparse.Namespace) -> bool:
    """Does this `train` command train (or resume) a baseline?"""
    from ..baselines import KINDS
    from ..training.presets import BASELINE_PRESETS

    if args.resume and args.out and (Path(args.out) / "config.json").is_file():
        from ..runs import read_config_json

        return read_config_json(Path(args.out)).get("kind") in KINDS
    return args.method in KINDS or args.preset in BASELINE_PRESETS


def baseline_config(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Any, Path, bool]:
    """(BaselineRunConfig, run directory, resume?) from the preset (or --method's digits preset), --config and the
    command line; `overrides` holds what train's shared flags set."""
    from ..baselines import BaselineRunConfig
    from ..training.config import deep_update
    from ..training.presets import BASELINE_PRESETS
    from .run_args import layered, resume_dir

    diffusion = [k for k in DIFFUSION_TRAIN_FLAGS if k in overrides]
    if diffusion or args.latent or args.text_encoder:
        what = ", ".join([*diffusion, *(["--latent"] if args.latent else []),
                          *(["--text-encoder"] if args.text_encoder else [])])
        raise ConfigError(f"a GAN, VAE or flow run has no diffusion settings ({what}): drop them")
    flags = [*((f, s, k) for f, s, k, _, _ in BASELINE_OVERRIDES), ("--kl-weight", "loss", "kl_weight"),
             ("--disc-lr", "loss", "disc_lr")]
    for flag, section, key in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    method = overrides.pop("method", None)
    if args.resume:
        from ..runs import resume_base

        run_dir = resume_dir(args, overrides)
        base = resume_base(run_dir, args.allow_change)
        if method is not None and method != base.get("kind"):
            raise ConfigError(f"{run_dir} is a {base.get('kind')} run, not {method}")
        return BaselineRunConfig.from_dict(deep_update(base, overrides)), run_dir, True
    preset = args.preset or (f"digits-{method}" if not args.config else None)
    if preset is not None and method is not None and BASELINE_PRESETS[preset]["kind"] != method:
        raise ConfigError(f"--preset {preset} trains a {BASELINE_PRESETS[preset]['kind']}, not --method {method}")
    base = {"preset": preset, **BASELINE_PRESETS[preset]} if preset else {"kind": method}
    return layered(args, base, overrides, deep_update, BaselineRunConfig.from_dict, preset or method or "baseline")


def run_train(args: argparse.Namespace, cfg: Any, run_dir: Path, resume: bool) -> int:
    """`diffusionlab train` of a baseline."""
    from ..baselines import KINDS, train_baseline
    from ..models import count_parameters
    from .run_args import print_result, progress_mode, trained

    res = trained("train", lambda: train_baseline(cfg, run_dir, resume=resume, progress=progress_mode(args),
                                                  allow_change=args.allow_change), run_dir)
    if not res.is_main_process:
        return 0
    params = count_parameters(KINDS[cfg.kind].network(cfg.model))
    print_result(res, f"{KINDS[cfg.kind].title}: {params:,} parameters in the sampled network")
    if res.sample_grid:
        print(f"sample grid:   {res.sample_grid}")
    print(f"next: diffusionlab sample {res.run_dir} --n 64   |   diffusionlab evaluate {res.run_dir} --fid"
          + (" --nll" if KINDS[cfg.kind].nll else ""))
    return 0


def refuse_diffusion_flags(args: argparse.Namespace, kind: str) -> None:
    """One line naming the first diffusion-only flag given to a baseline run."""
    for dest, (flag, default) in DIFFUSION_ONLY.items():
        if hasattr(args, dest) and getattr(args, dest) != default:
            raise ConfigError(f"{flag} is a diffusion setting; a {kind} run draws each sample in one network pass: "
                              "drop it")


def labels(run: Any, args: argparse.Namespace, n: int) -> Any:
    """--class K|all for a class-conditional baseline (default: classes in turn); one-line errors otherwise."""
    import torch

    if args.class_id is None:
        return None
    if not run.num_classes:
        raise ConfigError(f"--class needs a class-conditional run; {args.run_dir if hasattr(args, 'run_dir') else ''} "
                          "was trained without labels".replace("  ", " "))
    if args.class_id == "all":
        return torch.arange(n) % run.num_classes
    if not 0 <= args.class_id < run.num_classes:
        raise ConfigError(f"--class {args.class_id} is out of range: the run has classes 0..{run.num_classes - 1}")
    return torch.full((n,), args.class_id)


def load(run_dir: Path, args: argparse.Namespace) -> Any:
    """The baseline in `run_dir` (EMA weights unless --no-ema), from the config inside its checkpoint."""
    from ..baselines import load_baseline
    from ..runs import trusted_config
    from ..training.checkpoint import latest_checkpoint

    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(run_dir)
    return load_baseline(run_dir, trusted_config(run_dir, ckpt), ckpt, use_ema=not args.no_ema)


def run_sample(args: argparse.Namespace) -> int:
    """`diffusionlab sample` of a baseline run: --n images, .npz and grid."""
    from ..cli.args import npz_out
    from ..viz import SampleWriter

    run = load(Path(args.run_dir), args)
    refuse_diffusion_flags(args, run.kind.name)
    y = labels(run, args, args.n)
    tag = "" if args.class_id is None else f"-class{args.class_id}"
    out = npz_out(Path(args.out) if args.out else Path(args.run_dir) / "samples" / f"{run.kind.name}-seed{args.seed}{tag}.npz",
                  args.overwrite)
    writer = SampleWriter(out, args.n, run.image_shape)
    t0 = time.perf_counter()
    try:
        run.sample(args.n, args.seed, y, args.batch_size, progress=True, on_batch=writer.write)
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - t0
    grid = writer.close(arrays=None if y is None else {"labels": y.cpu().numpy()})
    if run.nonfinite:
        print(f"warning: {run.nonfinite} of {args.n} samples were not finite (NaN or infinite: the network overflowed); "
              "they are written as mid-grey images")
    print(f"{args.n} samples from the {run.kind.name}, NFE 1 per sample, {seconds:.2f} s ({args.n / seconds:.0f} "
          f"images/s; step {run.step} {'raw' if args.no_ema else 'EMA'} weights)")
    print(f"samples: {out}")
    print(f"grid:    {grid}")
    return 0


def run_evaluate(args: argparse.Namespace, target: Path) -> int:
    """`diffusionlab evaluate` of a baseline run: --nll (the ELBO bound of a VAE, the exact dequantized density of a
    flow) and --fid (FID, KID, precision and recall of --n samples, beside the real-data floor)."""
    import dataclasses

    from ..atomic import atomic_write_text
    from ..evaluation.digits import load_samples
    from ..evaluation.evaluate import build_extractor, load_split, nll_images, npz_to_images, quality_with_floor
    from ..evaluation.quality import describe as describe_quality
    from .outputs import check_output_file

    run = load(target, args)
    refuse_diffusion_flags(args, run.kind.name)
    if args.nll and run.kind.nll is None:
        raise ConfigError(f"a {run.kind.name} defines no likelihood, so it has no NLL: use --fid")
    if args.json:
        check_output_file(Path(args.json), "--json", args.overwrite, make_parents=True)
    fake = npz_to_images(load_samples(Path(args.samples))) if args.samples and args.fid else None
    y = labels(run, args, args.n) if fake is None else None
    if y is None and run.num_classes and fake is None:
        import torch

        y = torch.arange(args.n) % run.num_classes  # balanced classes, as diffusion's --fid
    report: dict[str, Any] = {"target": str(target), "checkpoint_step": run.step, "kind": run.kind.name}
    data_cfg = run.config.data if args.data_dir is None else dataclasses.replace(run.config.data, data_dir=args.data_dir)
    if args.nll:
        t0 = time.perf_counter()
        data, images, ny = nll_images(dataclasses.replace(run, config=dataclasses.replace(run.config, data=data_cfg)),
                                      args.split, args.nll_n, args.seed)
        r = run.bits_per_dim(images, ny, seed=args.seed, batch_size=args.batch_size, progress=True)
        r.update(dataset=data.name, split=args.split, seconds=time.perf_counter() - t0,
                 trained_on_split=run.config.data.split)
        seen = " (the run trained on split 'all', which contains it)" if r["trained_on_split"] == "all" else ""
        report["nll"] = r
        binary = " (of binarized pixels: not comparable with 8-bit bits/dim)" if \
            run.config.model.get("likelihood") == "bernoulli" else ""
        print(f"NLL, {r['what']}: {r['bits_per_dim']:.4f} ± {r['std_error']:.4f} bits/dim on {r['n_images']} "
              f"{args.split} images of {data.name}{binary}{seen}")
    if args.fid:
        train, test = load_split(data_cfg, "train"), load_split(data_cfg, args.split)
        extractor = build_extractor(args.extractor, train, test if args.split == "test" else load_split(data_cfg, "test"),
                                    inception_weights=args.inception_weights, download=args.download_inception,
                                    progress=True)
        if fake is None:
            t0 = time.perf_counter()
            fake = run.sample(args.n, args.seed, y, args.batch_size, progress=True)
            seconds = time.perf_counter() - t0
            how = f"{args.n} samples (NFE 1), {seconds:.1f} s"
            if run.nonfinite:
                how += f"; {run.nonfinite} of them not finite (scored as mid-grey images)"
            report["sampling"] = {"n": args.n, "seed": args.seed, "nfe": 1, "seconds": seconds, "nonfinite": run.nonfinite,
                                  "classes": None if y is None else "all" if args.class_id is None else str(args.class_id)}
        else:
            how = f"samples from {args.samples}"
        q = quality_with_floor(fake, train, test, extractor, k=args.k, seed=args.seed)
        report["quality"] = q
        print(describe_quality(how, q, args.split, args.k))
    out = Path(args.json) if args.json else target / "eval" / f"eval-step{run.step}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_text(out, json.dumps(report, indent=1, default=float))
    print(f"report: {out}")
    return 0


__all__ = ["BASELINE_OVERRIDES", "add_train_flags", "baseline_config", "baseline_flags_given", "is_baseline_request", "run_evaluate",
           "run_sample", "run_train"]
