"""`diffusionlab evaluate` (the NLL in bits/dim; FID, KID, precision/recall and IS beside the real-data floor) and
`diffusionlab classify` (the independent digit judge)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .. import validation as v
from ..evaluation.quality import describe as describe_quality, summary as _fmt_quality
from ..errors import ConfigError, DataError
from .args import (add_guidance_flags, add_precision_flag, add_sampler_options, check_sampling_memory, positive_int,
                   sampler_and_steps, sampler_options, seed)
from .outputs import add_overwrite_flag, check_output_file
from .upsample import add_aug_level


LATENT_NOTE = ("in LATENT space: bits per latent dimension of the density of z = E(x), a continuous bound that is "
               "not a pixel likelihood and not comparable with pixel bits/dim")


def add_parsers(sub: Any) -> None:
    """The `evaluate` and `classify` sub-commands."""
    from ..data import SPLITS
    from ..evaluation.evaluate import EXTRACTORS
    from ..evaluation.ode_likelihood import DIVERGENCES
    from ..samplers.ode import ODE_METHODS

    e = sub.add_parser("evaluate", help="NLL bound (bits/dim) and FID/KID/precision/recall of a run or a samples file",
                       description="Evaluate a trained run (RUN_DIR) or a samples file (FILE.npz with --dataset).")
    e.add_argument("target", metavar="RUN_DIR|FILE.npz")
    e.add_argument("--nll", action="store_true", help="variational bound in bits/dim on a test split, term by term")
    e.add_argument("--fid", action="store_true", help="FID, KID, precision/recall (k-NN) and IS of samples")
    e.add_argument("--split", choices=SPLITS, default="test", help="real split to evaluate against (default test)")
    e.add_argument("--nll-n", type=positive_int, default=256, help="test images for the bound (default 256)")
    e.add_argument("--nll-steps", type=positive_int, default=None, help="bound on a K-step respaced chain (default T)")
    e.add_argument("--ode", action="store_true",
                   help="with --nll: the exact NLL by the probability-flow ODE (dequantized) instead of the bound")
    e.add_argument("--ode-steps", type=positive_int, default=25, help="--ode: steps in log sigma (default 25)")
    e.add_argument("--ode-method", choices=ODE_METHODS, default="rk4",
                   help="--ode: the ODE solver (default rk4; adaptive uses --rtol)")
    e.add_argument("--divergence", choices=DIVERGENCES, default="hutchinson",
                   help="--ode: Hutchinson's estimate (Rademacher probe, seeded) or the exact trace (D backward passes)")
    e.add_argument("--n", type=positive_int, default=1000, help="samples for FID (default 1000)")
    e.add_argument("--samples", metavar="FILE.npz", help="evaluate these samples instead of generating new ones")
    add_sampler_options(e)
    add_guidance_flags(e)  # --fid of a conditional run: which classes or prompts, and the guidance scale
    add_aug_level(e)  # --fid of a super-resolution run
    e.add_argument("--extractor", choices=EXTRACTORS, default="auto",
                   help="features: a domain classifier trained on the data, or Inception-v3 (needs its weights)")
    e.add_argument("--inception-weights", metavar="FILE", help="pt_inception-2015-12-05-6726825d.pth or a .safetensors copy")
    e.add_argument("--download-inception", action="store_true", help="download the FID Inception weights (online only)")
    e.add_argument("--k", type=positive_int, default=3, help="k of the k-NN precision/recall (default 3)")
    e.add_argument("--dataset", help="reference dataset for a samples file (source name as in train --dataset)")
    e.add_argument("--data-dir", help="directory of that dataset")
    e.add_argument("--seed", type=seed, default=0, help="random seed in [0, 2^63) (default 0)")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--no-clip", action="store_true", help="do not clip the x0 prediction to the data range")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    add_precision_flag(e)
    e.add_argument("--checkpoint", metavar="DIR", help="a specific checkpoint folder (default: the newest)")
    e.add_argument("--json", metavar="FILE", help="where to write the full report (default: beside the run/samples)")
    add_overwrite_flag(e, "the report")

    c = sub.add_parser("classify", help="check samples with an independent digit classifier",
                       description="Classify 8x8 digit samples (a .npz from `sample`) with a classifier trained on the real digits.")
    c.add_argument("samples", metavar="FILE.npz")
    c.add_argument("--json", action="store_true", help="print the report as JSON")


def evaluate_autoencoder(args: argparse.Namespace, target: Path) -> int:
    """`evaluate AE_RUN --fid`: PSNR and rFID of the test split's reconstructions (EMA weights), beside the floor."""
    from ..atomic import atomic_write_text
    from ..errors import CheckpointError
    from ..evaluation.evaluate import build_extractor, load_split
    from ..evaluation.reconstruction import reconstruction_report
    from ..models.autoencoder import AutoencoderConfig, AutoencoderKL
    from ..runs import read_autoencoder_run_config
    from ..training.checkpoint import latest_checkpoint, load_checkpoint

    if args.nll or not args.fid:
        raise ConfigError("an autoencoder run is evaluated by its reconstructions: use --fid (PSNR and rFID)")
    if args.json:
        check_output_file(Path(args.json), "--json", args.overwrite, make_parents=True)
    cfg = read_autoencoder_run_config(target)
    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(target)
    state = load_checkpoint(ckpt, with_optimizer=False)
    model = AutoencoderKL(AutoencoderConfig.from_dict(cfg.model))
    try:
        model.load_state_dict(state.model if args.no_ema else state.ema)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt} does not match the autoencoder in config.json "
                              f"({str(e).splitlines()[0][:100]})") from None
    data = cfg.data if args.data_dir is None else dataclasses.replace(cfg.data, data_dir=args.data_dir)
    train, test = load_split(data, "train"), load_split(data, args.split)
    extractor = build_extractor(args.extractor, train, test, inception_weights=args.inception_weights,
                                download=args.download_inception, progress=True)
    r = reconstruction_report(model, train, test, extractor, n=args.n, seed=args.seed)
    q = r["quality"]
    print(f"reconstructions of {r['n']} {args.split} images (step {state.step} {'raw' if args.no_ema else 'EMA'} weights): "
          f"PSNR {r['psnr_mean']:.2f} dB (median {r['psnr_median']:.2f})")
    print(f"  rFID {q['fid']:.3f} | KID {q['kid_mean']:.4f} | precision {q['precision']:.3f} | recall {q['recall']:.3f}")
    print(f"  real-data floor (train vs {args.split}): FID {q['floor']['fid']:.3f}")
    print(f"  [extractor: {q['extractor']}; latents {'x'.join(map(str, model.config.latent_shape))}, f = {model.config.factor}]")
    out = Path(args.json) if args.json else target / "eval" / f"eval-step{state.step}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_text(out, json.dumps({"target": str(target), "checkpoint_step": state.step, "reconstruction": r},
                                      indent=1, default=float))
    print(f"report: {out}")
    return 0


def evaluate_upsampler(args: argparse.Namespace, run: Any, target: Path, options: Any) -> int:
    """`evaluate UPSAMPLER_RUN --fid`: PSNR, SSIM and FID of the test split restored from its degraded copies, beside
    bicubic interpolation and the real-data floor (evaluation/superres.py)."""
    from ..atomic import atomic_write_text
    from ..evaluation.evaluate import build_extractor, load_split
    from ..evaluation.superres import superres_report
    from .upsample import aug_level

    if args.nll:
        raise ConfigError("--nll is not computed for a super-resolution run (its likelihood is conditional on the "
                          "low-resolution image); use --fid (PSNR, SSIM and FID against bicubic)")
    if args.samples or args.class_id is not None or args.prompt or args.prompt_file or args.guidance_scale is not None:
        raise ConfigError("a super-resolution run is evaluated on the degraded test split: drop --samples, --class, "
                          "--prompt and --guidance-scale")
    if args.json:
        check_output_file(Path(args.json), "--json", args.overwrite, make_parents=True)
    level = aug_level(args, run)
    sampler, steps = sampler_and_steps(args, run)
    check_sampling_memory(args.n, run)
    data = run.config.data if args.data_dir is None else dataclasses.replace(run.config.data, data_dir=args.data_dir)
    train, test = load_split(data, "train"), load_split(data, args.split)
    extractor = build_extractor(args.extractor, train, test, inception_weights=args.inception_weights,
                                download=args.download_inception, progress=True)
    r = superres_report(run, train, test, extractor, n=args.n, sampler=sampler, steps=steps, level=level,
                        seed=args.seed, options=options, batch_size=args.batch_size, progress=True)
    lowres = "x".join(map(str, run.lowres_shape[1:]))
    print(f"x{r['factor']} super-resolution of {r['n']} {args.split} images ({lowres} -> "
          f"{'x'.join(map(str, run.image_shape[1:]))}), {sampler} {steps} steps (NFE {r['nfe']}), aug level "
          f"{level:g}, {r['seconds_per_image'] * 1000:.1f} ms per image (step {run.step} "
          f"{'raw' if args.no_ema else 'EMA'} weights)")
    for name in ("model", "bicubic"):
        f, q = r[name], r[name]["quality"]
        print(f"  {name:8s} PSNR {f['psnr_mean']:.2f} dB (median {f['psnr_median']:.2f}) | SSIM {f['ssim_mean']:.4f} "
              f"| {_fmt_quality(q)}")
    floor = r["model"]["quality"]["floor"]
    print(f"  real-data floor (train vs {args.split}): FID {floor['fid']:.3f}")
    print(f"  [extractor: {r['model']['quality']['extractor']}; SSIM window {r['ssim_window']}]")
    out = Path(args.json) if args.json else target / "eval" / f"eval-step{run.step}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_text(out, json.dumps({"target": str(target), "superres": r}, indent=1, default=float))
    print(f"report: {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`diffusionlab evaluate`."""
    from ..evaluation.digits import load_samples
    from ..evaluation.evaluate import (build_extractor, load_split, nll_report, npz_to_images, ode_nll_report,
                                      quality_with_floor)
    from ..training.config import DataConfig

    if not (args.nll or args.fid):
        raise ConfigError("choose what to measure: --nll and/or --fid")
    options = sampler_options(args)  # bad sampler options fail before any work
    if args.ode and not args.nll:
        raise ConfigError("--ode goes with --nll (the NLL by the probability-flow ODE)")
    if args.ode_steps > v.MAX_SAMPLING_STEPS:
        raise ConfigError(f"--ode-steps {args.ode_steps} is more than any solver needs (at most {v.MAX_SAMPLING_STEPS:,})")
    target = Path(args.target)
    is_npz = target.suffix == ".npz"
    if not is_npz and (target / "config.json").is_file():
        from ..runs import read_config_json

        if read_config_json(target).get("kind") == "autoencoder":
            return evaluate_autoencoder(args, target)
        from ..runs import is_baseline_run

        if is_baseline_run(target):
            from .baseline import run_evaluate

            return run_evaluate(args, target)
    run = None
    if is_npz:
        if args.nll:
            raise ConfigError("--nll needs a run directory (the model), not a samples file")
        if args.samples:
            raise ConfigError("--samples goes with a run directory; a samples file is evaluated directly")
        if not args.dataset:
            raise ConfigError("evaluating a samples file needs --dataset (and --data-dir) for the real reference")
        data_cfg = DataConfig(source=args.dataset, data_dir=args.data_dir)
    # The report's file and the samples file are checked first: a bad one must fail now, not after minutes of work.
    out = Path(args.json) if args.json else target.with_suffix(".eval.json") if is_npz else None
    if out is not None:
        check_output_file(out, "--json", args.overwrite, make_parents=True)
    samples_file = target if is_npz else Path(args.samples) if args.samples and args.fid else None
    fake = npz_to_images(load_samples(samples_file)) if samples_file is not None else None
    if not is_npz:
        from ..runs import load_run

        run = load_run(target, Path(args.checkpoint) if args.checkpoint else None, use_ema=not args.no_ema,
                       mixed_precision=args.mixed_precision)
        if run.superres is not None:
            return evaluate_upsampler(args, run, target, options)
    if args.aug_level is not None:
        raise ConfigError("--aug-level sets the condition of a super-resolution run; this is not one")
    if not is_npz:
        data_cfg = run.config.data
        if args.nll and not args.ode and args.nll_steps is not None and run.process.T is not None \
                and args.nll_steps > run.process.T:
            raise ConfigError(f"--nll-steps {args.nll_steps} is more than the model's T = {run.process.T}")
        if args.fid and fake is None:
            sampler, steps = sampler_and_steps(args, run)
            check_sampling_memory(args.n, run)
            model, y, condition = evaluation_condition(run, args, data_cfg)
    if (run is None or not args.fid or fake is not None) and (args.class_id is not None or args.prompt
                                                              or args.prompt_file or args.guidance_scale is not None):
        raise ConfigError("--class, --prompt and --guidance-scale choose what a run samples for --fid; here nothing "
                          "is sampled")
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
        what = "dequantized 8-bit" if r["space"] == "pixels" else LATENT_NOTE
        print(f"NLL (probability-flow ODE): {r['bits_per_dim']:.4f} ± {r['std_error']:.4f} bits/dim on {r['n_images']} "
              f"{r['split']} images of {r['dataset']}, {what}")
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
        if r["space"] != "pixels":
            note += f", {LATENT_NOTE}"
        print(f"NLL bound: {r['bits_per_dim']:.4f} ± {r['std_error']:.4f} bits/dim on {r['n_images']} {r['split']} "
              f"images of {r['dataset']}{note}")
        print(f"  L_T {r['prior_bpd']:.5f} + sum L_(t-1) {r['diffusion_bpd']:.4f} + L_0 {r['decoder_bpd']:.4f} "
              f"[{r['steps']} steps, variance {r['variance']}, NFE {r['nfe_per_image']} per image, {r['seconds']:.0f} s]")

    if args.fid:
        train, test = load_split(data_cfg, "train"), load_split(data_cfg, args.split)
        if fake is not None and fake.shape[1:] != test.images.shape[1:]:
            raise DataError(f"{samples_file}: samples have shape {tuple(fake.shape[1:])}, the reference data "
                            f"{tuple(test.images.shape[1:])}")
        # The extractor first: a missing weights file must fail before minutes of sampling, not after.
        extractor = build_extractor(args.extractor, train, test if args.split == "test" else load_split(data_cfg, "test"),
                                    inception_weights=args.inception_weights, download=args.download_inception,
                                    progress=True)
        if fake is not None:
            how = f"samples from {samples_file}"
        else:
            assert run is not None
            from ..data import from_model_range
            from ..sampling import generate

            t0 = time.perf_counter()
            res = generate(model, run.process, run.model_shape, args.n, sampler, steps, options=options,
                           seed=args.seed, y=y, codec=run.codec, batch_size=args.batch_size, progress=True)
            fake = from_model_range(res.images)
            how = f"{args.n} samples, {sampler} {steps} steps (NFE {res.nfe}), {time.perf_counter() - t0:.0f} s"
            report["sampling"] = {"sampler": sampler, "steps": steps, **dataclasses.asdict(options), "nfe": res.nfe,
                                  "n": args.n, "seed": args.seed, **condition}
            if condition:
                how += f"; {condition['description']}"
        q = quality_with_floor(fake, train, test, extractor, k=args.k, seed=args.seed)
        report["quality"] = q
        print(describe_quality(how, q, args.split, args.k))

    if out is None:
        out = target / "eval" / f"eval-step{report.get('checkpoint_step', 0)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from ..atomic import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=1, default=float))
    print(f"report: {out}")
    return 0


def evaluation_condition(run: Any, args: argparse.Namespace, data_cfg: Any) -> tuple[Any, Any, dict[str, Any]]:
    """What a conditional run samples for --fid: a text run draws one sample per caption of the evaluated split (the
    zero-shot FID protocol of GLIDE and LDM: the prompts of the reference images), or the given --prompt(s); a
    class-conditional run draws the classes in turn (or --class K). --guidance-scale S (default 1) applies."""
    from ..evaluation.evaluate import load_split
    from .guidance import guided_model

    captions = None
    if run.tokenizer is not None and not (args.prompt or args.prompt_file):
        captions = load_split(data_cfg, args.split).captions
        if not captions:
            raise DataError(f"split {args.split} of {data_cfg.source} has no captions: give --prompt or --prompt-file")
    if run.config.model.get("num_classes") and args.class_id is None:
        args.class_id = "all"  # balanced classes
    model, y, _ = guided_model(run, args, args.n, captions)
    if y is None:
        return model, None, {}
    S = getattr(model, "guidance_scale", None)
    if run.tokenizer is not None:
        what = f"the {args.split} split's captions" if captions is not None else "the given prompts"
        return model, y, {"prompts": what, "guidance_scale": S,
                          "description": f"prompts: {what}, guidance scale {S:g}"}
    what = "classes 0, 1, ... in turn" if args.class_id == "all" else f"class {args.class_id}"
    scale = "" if S is None else f", guidance scale {S:g}"
    return model, y, {"classes": str(args.class_id), "guidance_scale": S, "description": f"{what}{scale}"}


def run_classify(args: argparse.Namespace) -> int:
    """`diffusionlab classify`."""
    from ..evaluation.digits import classify_digits, load_samples

    report = classify_digits(load_samples(Path(args.samples)))
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


__all__ = ["add_parsers", "run", "run_classify"]
