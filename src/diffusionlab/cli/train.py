"""`diffusionlab train`: a preset, a config file and command-line overrides become one run config; then train it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from ..data import DATASETS, SPLITS
from ..errors import ConfigError
from .args import int_list, positive_float, positive_int

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
    ("--batch-size", "train", "batch_size", positive_int, "global batch size"),
    ("--lr", "train", "lr", positive_float, "peak learning rate (AdamW)"),
    ("--weight-decay", "train", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "train", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--grad-clip", "train", "grad_clip", float, "gradient-norm clipping (0 disables)"),
    ("--ema-decay", "train", "ema_decay", float, "EMA decay"),
    ("--mixed-precision", "train", "mixed_precision", str, "no, bf16 or fp16"),
    ("--log-every", "train", "log_every", positive_int, "log metrics every N steps"),
    ("--sample-every", "train", "sample_every", positive_int, "write a sample grid every N steps"),
    ("--checkpoint-every", "train", "checkpoint_every", positive_int, "write a checkpoint every N steps"),
    ("--keep-checkpoints", "train", "keep_checkpoints", positive_int, "how many checkpoints to keep"),
    ("--label-dropout", "train", "label_dropout", float, "p_uncond: probability of the null label"),
    ("--grid-sampler", "sample", "sampler", str, "sampler for the training-time sample grids"),
    ("--grid-steps", "sample", "steps", positive_int, "sampling steps for the training-time grids"),
    ("--grid-n", "sample", "n", positive_int, "images in each training-time grid"),
]
# What may change when a run is resumed: the budget and the bookkeeping, never the model or the data.
RESUMABLE = {("train", k) for k in ("steps", "minutes", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints")}


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
    from ..processes import METHODS
    from ..sampling import SAMPLER_NAMES
    from ..training.config import MIXED_PRECISION
    from ..training.presets import PRESETS

    t = sub.add_parser("train", help="train a model (or resume a run)", description="Train a diffusion model.")
    t.add_argument("--preset", choices=tuple(PRESETS), default=None, help="start from a preset (default: digits)")
    t.add_argument("--config", metavar="FILE", help="JSON config merged over the preset")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/PRESET-TIMESTAMP)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help="training steps")
    budget.add_argument("--minutes", type=positive_float, help="wall-clock budget in minutes")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with class labels")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto", help="progress display")
    t.add_argument("--method", choices=tuple(METHODS), default=None, help=f"model family: {', '.join(METHODS)}")
    for flag, name, parse, choices, hlp in process_flags():
        t.add_argument(flag, dest=f"process_{_dest(flag)}", type=parse, choices=choices, default=None, help=hlp,
                       metavar=None if choices else name.upper())
    choices = {"--mixed-precision": MIXED_PRECISION, "--grid-sampler": SAMPLER_NAMES}
    for flag, _, _, typ, hlp in OVERRIDES:
        t.add_argument(flag, type=typ, default=None, choices=choices.get(flag), help=hlp)


def config_for_train(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(RunConfig, run directory, resume?) from the preset, --config and the overrides."""
    from ..training.config import RunConfig, merge_config, preset_config, read_config_file

    overrides: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            overrides.setdefault(section, {})[key] = value

    for flag, section, key, _, _ in OVERRIDES:
        put(section, key, getattr(args, _dest(flag)))
    put("process", "method", args.method)
    for flag, name, _, _, _ in process_flags():
        put("process", name, getattr(args, f"process_{_dest(flag)}"))
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
        from ..runs import read_run_config

        run_dir = Path(args.out)
        base = read_run_config(run_dir).to_dict()
        for section, values in overrides.items():
            for key in values:
                if (section, key) not in RESUMABLE:
                    raise ConfigError(f"cannot change {section}.{key} when resuming (only the budget and logging)")
        cfg = RunConfig.from_dict(merge_config(base, overrides))
        return cfg, run_dir, True

    preset = args.preset or ("digits" if not args.config else None)
    base = preset_config(preset)
    if args.config:
        base = merge_config(base, read_config_file(args.config))
    cfg = RunConfig.from_dict(merge_config(base, overrides))
    run_dir = Path(args.out) if args.out else Path("runs") / f"{cfg.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, run_dir, False


def run(args: argparse.Namespace) -> int:
    """`diffusionlab train`."""
    from ..training.trainer import train

    cfg, run_dir, resume = config_for_train(args)
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


__all__ = ["OVERRIDES", "RESUMABLE", "add_parser", "config_for_train", "process_flags", "run"]
