"""The guidance and conditioning commands: train-classifier, inpaint (RePaint), edit (SDEdit), and the guided model
that `sample` uses for --class / --guidance-scale / --classifier.

Heavy imports (torch, the models) happen inside the commands, so `diffusionlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import validation as v
from ..errors import ConfigError
from .args import add_guidance_flags, add_model_flags, int_list, npz_out, positive_float, positive_int, seed
from .outputs import add_overwrite_flag, check_output_folder

if TYPE_CHECKING:
    import torch

    from ..denoiser import Denoiser
    from ..runs import LoadedRun


def add_parsers(sub: Any) -> None:
    """The train-classifier, inpaint and edit sub-commands."""
    from ..processes.vlb import VARIANCES
    from ..sampling import VP_SAMPLERS
    from ..schedules import SCHEDULES

    k = sub.add_parser("train-classifier", help="train a noise-aware classifier for classifier guidance",
                       description="Train f_phi(y | x_t, t) on x_t = q_sample(x0, t, eps), t ~ U{1..T}, on the schedule of "
                                   "RUN_DIR (and its dataset) or of --schedule/--timesteps with --dataset.")
    k.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run whose dataset and schedule to use")
    k.add_argument("--dataset", help="dataset source instead of a run (as in train --dataset)")
    k.add_argument("--data-dir", help="directory of that dataset")
    k.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="with --dataset (default cosine)")
    k.add_argument("--timesteps", type=positive_int, default=1000, help="T, with --dataset (default 1000)")
    k.add_argument("--out", required=True, metavar="DIR", help="folder for classifier.safetensors and classifier.json")
    add_overwrite_flag(k, "a classifier already in --out")
    k.add_argument("--steps", type=positive_int, default=1000, help="training steps (default 1000)")
    k.add_argument("--batch-size", type=positive_int, default=128)
    k.add_argument("--lr", type=positive_float, default=1e-3)
    k.add_argument("--base-channels", type=positive_int, default=32)
    k.add_argument("--channel-mult", type=int_list, default=None, help="width multipliers per level (default 1,2,2)")
    k.add_argument("--seed", type=seed, default=0, help="random seed in [0, 2^63) (default 0)")
    k.add_argument("--eval-n", type=positive_int, default=1000, help="test images per t bucket for the accuracy report")

    def run_flags(p: argparse.ArgumentParser, default_sampler: str) -> None:
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.add_argument("--image", required=True, metavar="FILE", help="PNG/JPEG, .npy, or a samples .npz (several images)")
        p.add_argument("--n", type=positive_int, default=8, help="outputs per input image (default 8)")
        p.add_argument("--sampler", choices=VP_SAMPLERS, default=default_sampler)
        p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: 50 for ddim, T for ddpm)")
        p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1]")
        p.add_argument("--variance", choices=VARIANCES, default=None, help="DDPM sigma_t^2")
        p.add_argument("--seed", type=seed, default=0, help="random seed in [0, 2^63) (default 0)")
        p.add_argument("--out", metavar="FILE.npz", help="output file (default: RUN_DIR/samples/...)")
        add_overwrite_flag(p, "the .npz (and its .png grid)")
        add_model_flags(p)
        add_guidance_flags(p)

    i = sub.add_parser("inpaint", help="fill the unknown pixels of an image (RePaint)",
                       description="RePaint (Lugmayr et al. 2022): known pixels are re-imposed from the forward process "
                                   "at every step; mask 1 = known, 0 = generate.")
    run_flags(i, "ddpm")
    i.add_argument("--mask", required=True, metavar="FILE", help="PNG (0/255) or .npy (0/1), HxW; 1 = known pixel")
    i.add_argument("--resample", type=positive_int, default=1, help="RePaint resamplings per jump point (default 1: off)")
    i.add_argument("--jump", type=positive_int, default=1, help="RePaint jump length in steps (default 1)")

    d = sub.add_parser("edit", help="SDEdit: noise an image to t = s T and denoise it",
                       description="SDEdit (Meng et al. 2022): strength 0 returns the input, 1 ignores it.")
    run_flags(d, "ddim")
    d.add_argument("--strength", type=float, required=True, metavar="S", help="s in [0, 1]: start the reverse process at t = s T")


def load_for_sampling(args: argparse.Namespace) -> tuple[LoadedRun, int]:
    """The run of args.run_dir (EMA or raw weights) and the number of sampling steps, after checking --eta/--steps."""
    from ..runs import load_run
    from .args import sampler_and_steps

    if not 0.0 <= args.eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {args.eta}")
    run = load_run(Path(args.run_dir), Path(args.checkpoint) if args.checkpoint else None, use_ema=not args.no_ema,
                   mixed_precision=getattr(args, "mixed_precision", "auto"))
    return run, sampler_and_steps(args, run)[1]


def guided_model(run: LoadedRun, args: argparse.Namespace, n: int,
                 default_prompts: list[str] | None = None) -> tuple[Denoiser, torch.Tensor | None, str]:
    """The run's denoiser wrapped for --class/--guidance-scale/--classifier (or --prompt; `default_prompts` when
    none is given), the labels or token ids y, and a file-name tag."""
    import torch

    from ..guidance import ClassifierFreeGuidance, ClassifierGuidance, check_labels
    from ..training.classifier import guidance_classifier, load_classifier

    if run.tokenizer is not None or args.prompt or args.prompt_file:
        return prompted_model(run, args, n, default_prompts)
    num_classes = run.config.model.get("num_classes")
    cls, S, W = args.class_id, args.guidance_scale, args.classifier_scale
    if cls is None:
        if S is not None or args.classifier:
            raise ConfigError("--guidance-scale and --classifier need --class K (or --class all)")
        return run.denoiser, None, ""
    for flag, value in (("--guidance-scale", S), ("--classifier-scale", W)):
        if value is not None and not (value >= 0 and value < float("inf")):
            raise ConfigError(f"{flag} must be a number >= 0, got {value}")
    classifier = load_classifier(Path(args.classifier)) if args.classifier else None
    if num_classes is None and classifier is None:
        raise ConfigError("this run is unconditional (trained without --class-conditional): --class needs a "
                          "class-conditional run or --classifier")
    k = num_classes if num_classes is not None else classifier.net.config.num_classes  # type: ignore[union-attr]
    y = torch.arange(n) % k if cls == "all" else torch.full((n,), int(cls), dtype=torch.long)
    check_labels(y, k)
    model, tag = run.denoiser, f"-class{cls}"
    if num_classes is not None:
        S = 1.0 if S is None else S
        model, tag = ClassifierFreeGuidance(model, S, null_label=num_classes), f"{tag}-cfg{S:g}"
    elif S is not None:
        raise ConfigError("--guidance-scale needs a class-conditional run (this one is unconditional)")
    if classifier is not None:
        if run.process.T is None:
            raise ConfigError(f"classifier guidance needs a DDPM run (the classifier learns on its discrete schedule); "
                              f"this run is method {run.process.method}")
        fn = guidance_classifier(classifier, run.process.schedule_name, run.process.T, num_classes, run.model_shape)
        model, tag = ClassifierGuidance(model, fn, W, pass_label=num_classes is not None), f"{tag}-clf{W:g}"
    return model, y, tag


def read_prompts(args: argparse.Namespace) -> list[str]:
    """--prompt (repeatable) and --prompt-file (one per line), in that order; empty prompts are an error."""
    prompts = list(args.prompt or [])
    if args.prompt_file:
        path = Path(args.prompt_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --prompt-file {path}: {getattr(e, 'strerror', None) or e}") from None
        prompts += [ln.strip() for ln in lines if ln.strip()]
        if not lines or not any(ln.strip() for ln in lines):
            raise ConfigError(f"--prompt-file {path} holds no prompts")
    if any(not p.strip() for p in prompts):
        raise ConfigError("a --prompt is empty (leave --prompt out to draw unconditionally)")
    return prompts


def prompted_model(run: LoadedRun, args: argparse.Namespace, n: int,
                   default_prompts: list[str] | None = None) -> tuple[Denoiser, torch.Tensor | None, str]:
    """A text run's denoiser for --prompt/--prompt-file (or `default_prompts`) with classifier-free guidance whose
    null condition is the empty caption (docs/maths.md section 4: S = 1 conditional, S = 0 unconditional), the token ids
    y (n, L), a file tag."""
    from ..guidance import ClassifierFreeGuidance

    tok = run.tokenizer
    prompts = read_prompts(args) or list(default_prompts or [])
    if tok is None:
        raise ConfigError("--prompt needs a text run (trained with --text-conditional); this one is not")
    if args.class_id is not None or args.classifier:
        raise ConfigError("a text run is conditioned on --prompt, not on --class or --classifier")
    S = args.guidance_scale
    if S is not None and not (S >= 0 and S < float("inf")):
        raise ConfigError(f"--guidance-scale must be a number >= 0, got {S}")
    if not prompts:
        if S is not None:
            raise ConfigError("--guidance-scale needs --prompt (without one the samples are unconditional)")
        return run.denoiser, None, ""
    unknown = sorted({w for p in prompts for w in tok.unknown_words(p)})
    if unknown:
        print(f"warning: the text encoder never saw {', '.join(repr(w) for w in unknown)} in training; "
              "those words read as [UNK]", file=sys.stderr)
    y = tok.encode([prompts[i % len(prompts)] for i in range(n)])
    S = 1.0 if S is None else S
    model = ClassifierFreeGuidance(run.denoiser, S, null_label=tok.encode([""])[0])
    return model, y, f"-prompt-cfg{S:g}"


def describe_guidance(model: Denoiser) -> str:
    """One line saying which guidance a model applies and what one NFE costs."""
    from ..guidance import ClassifierFreeGuidance, ClassifierGuidance

    parts = []
    while isinstance(model, (ClassifierFreeGuidance, ClassifierGuidance)):
        if isinstance(model, ClassifierGuidance):
            parts.append(f"classifier scale W = {model.classifier_scale:g} (+1 classifier gradient per NFE)")
        else:
            S = model.guidance_scale
            cost = "1 network pass" if S in (0.0, 1.0) else "2 network passes, batched"
            parts.append(f"classifier-free scale S = {S:g} ({cost} per NFE)")
        model = model.model
    return "; ".join(reversed(parts))


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """`diffusionlab train-classifier`."""
    from ..data import load_dataset
    from ..models.classifier import ClassifierConfig
    from ..training.classifier import META, WEIGHTS, check_classifier_out, train_classifier

    if (args.run_dir is None) == (args.dataset is None):
        raise ConfigError("give a RUN_DIR (its dataset and schedule) or --dataset, not both or neither")
    check_output_folder(Path(args.out), "--out", args.overwrite, (WEIGHTS, META))
    check_classifier_out(Path(args.out))  # the folder is replaced whole: it must hold nothing but a classifier
    if args.timesteps > v.MAX_T:
        raise ConfigError(f"--timesteps {args.timesteps} is more than any schedule needs (at most {v.MAX_T:,})")
    if args.run_dir is not None:
        from ..runs import read_run_config

        cfg = read_run_config(Path(args.run_dir))
        process = cfg.process.build()
        if process.T is None or cfg.codec.get("kind", "pixel") != "pixel":
            raise ConfigError("a noisy classifier learns on a pixel-space DDPM run's schedule; "
                              f"{args.run_dir} is method {cfg.process.method} in {cfg.codec.get('kind', 'pixel')} space")
        d = cfg.data
        source, data_dir, size, channels = d.source, d.data_dir, d.image_size, d.channels
        schedule, T = process.schedule_name, process.T
        origin = {"run_dir": str(args.run_dir)}
    else:
        source, data_dir, size, channels = args.dataset, args.data_dir, None, None
        schedule, T = args.schedule, args.timesteps
        origin = {"dataset": args.dataset, "data_dir": args.data_dir}
    train = load_dataset(source, data_dir, "train", size, channels)
    test = load_dataset(source, data_dir, "test", size, channels)
    config: dict[str, Any] = {"base_channels": args.base_channels}
    if args.channel_mult:
        config["channel_mult"] = args.channel_mult
    # Labels, the network and one batch must be there and fit before training starts (one-line errors).
    if train.labels is None or not train.num_classes:
        raise ConfigError(f"dataset {train.name} has no labels: a classifier needs them")
    ClassifierConfig.from_dict({"image_size": train.height, "in_channels": train.channels,
                                "num_classes": train.num_classes, **config})
    v.require_memory(v.images_bytes(args.batch_size, train.shape), f"--batch-size {args.batch_size}", "one batch of images")
    print(f"training a noisy classifier on {train.name} ({len(train)} images), {schedule} schedule T = {T}, "
          f"{args.steps} steps -> {args.out}", flush=True)
    meta = train_classifier(train, test, schedule, T, Path(args.out), config=config, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_n=args.eval_n,
                            progress=True, source=origin)
    print(f"done: loss {meta['final_loss']:.4f}, {meta['train_seconds'] / 60:.1f} min")
    print(f"test accuracy on x_t by t ({test.name}, {args.eval_n} images per bucket):")
    for r in meta["accuracy_by_t"]:
        print(f"  t {r['t_from']:>5}-{r['t_to']:<5} {100 * r['accuracy']:5.1f}%")
    print(f"  mean {100 * meta['accuracy_mean']:.1f}%")
    print(f"classifier: {Path(args.out)}")
    return 0


def _conditioning(args: argparse.Namespace, kind: str) -> int:
    """inpaint / edit: load the run and the images, run RePaint or SDEdit in batches, write .npz + grid."""
    import torch

    from ..data import from_model_range, to_model_range
    from ..editing import start_step
    from ..image_files import load_images, load_mask
    from ..sampling.conditioned import inpaint_or_edit
    from ..viz import write_samples

    if kind == "edit" and not 0.0 <= args.strength <= 1.0:
        raise ConfigError(f"--strength must be in [0, 1], got {args.strength}")
    if args.out:  # an output that cannot be written fails before the run is loaded, not after the sampling
        npz_out(Path(args.out), args.overwrite)
    run, steps = load_for_sampling(args)
    if run.codec.kind != "pixel":
        raise ConfigError(f"{kind} works on pixels; this run's model lives in {run.codec.kind} space")
    if kind == "inpaint":
        if args.jump > steps:
            raise ConfigError(f"--jump {args.jump} is more than the {steps} steps of the chain")
        if steps * args.resample > v.MAX_SAMPLING_STEPS:
            raise ConfigError(f"--resample {args.resample} makes {steps * args.resample:,} RePaint steps "
                              f"(at most {v.MAX_SAMPLING_STEPS:,})")
    schedule = run.process.vp_schedule(steps)
    images = load_images(args.image, run.image_shape)
    mask = load_mask(args.mask, run.image_shape) if kind == "inpaint" else None
    if kind == "edit":
        start_step(schedule, args.strength)  # validate before any work
    total = len(images) * args.n
    v.require_memory(v.sampling_bytes(total, run.image_shape, run.image_shape), f"--n {args.n}",
                     f"the {total:,} outputs")
    model, y, tag = guided_model(run, args, total)
    what = f"{kind}-{args.sampler}-{steps}-seed{args.seed}" + (f"-s{args.strength:g}" if kind == "edit" else "")
    out = npz_out(Path(args.out) if args.out else Path(args.run_dir) / "samples" / f"{what}{tag}.npz", args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    x_in = to_model_range(images).repeat_interleave(args.n, 0)
    variance = args.variance or run.process.variance
    clip = run.codec.x0_clip if not args.no_clip else None
    t0 = time.perf_counter()
    out_pixels, nfe = inpaint_or_edit(model, schedule, x_in, mask=mask,
                                      strength=args.strength if kind == "edit" else None, sampler=args.sampler,
                                      variance=variance, eta=args.eta, resample=getattr(args, "resample", 1),
                                      jump=getattr(args, "jump", 1), clip=clip, seed=args.seed, y=y,
                                      batch_size=args.batch_size)
    u8 = from_model_range(out_pixels)
    # The grid: each input (for inpainting, unknown pixels shown mid-grey) followed by its n outputs.
    shown = images if mask is None else (images * mask + 128 * (1 - mask)).to(torch.uint8)
    rows = torch.cat([torch.cat([shown[i : i + 1], u8[i * args.n : (i + 1) * args.n]]) for i in range(len(images))])
    grid = write_samples(u8, out, rows, nrow=args.n + 1)
    print(f"{total} outputs ({len(images)} input(s) x {args.n}), {kind} with {args.sampler} {steps} steps, NFE {nfe} "
          f"per output, {time.perf_counter() - t0:.1f} s (step {run.step} {'raw' if args.no_ema else 'EMA'} weights)")
    if tag:
        print(f"guidance: {describe_guidance(model)}")
    print(f"outputs: {out}")
    print(f"grid:    {grid}  (each row: the input, then its outputs)")
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    """`diffusionlab inpaint`."""
    return _conditioning(args, "inpaint")


def cmd_edit(args: argparse.Namespace) -> int:
    """`diffusionlab edit`."""
    return _conditioning(args, "edit")


__all__ = ["add_parsers", "cmd_edit", "cmd_inpaint", "cmd_train_classifier", "describe_guidance", "guided_model",
           "load_for_sampling"]
