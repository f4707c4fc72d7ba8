"""What every training command shares (train, train-autoencoder and the baselines' train): the run flags, the
budget, the layering of a preset, a config file and the command line, resume, and the end-of-training summary."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .args import positive_float, positive_int, seed
from .launch import procs_arg


def add_run_arguments(t: argparse.ArgumentParser, presets: tuple[str, ...], default: str) -> None:
    """What every training command takes: preset, config file, run directory, budget, seed, resume, progress."""
    t.add_argument("--preset", choices=presets, default=None, help=f"start from a preset (default: {default})")
    t.add_argument("--config", metavar="FILE", help="config file (JSON, YAML or TOML) merged over the preset")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/PRESET-TIMESTAMP)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help="training steps")
    budget.add_argument("--minutes", type=positive_float, help="wall-clock budget in minutes")
    t.add_argument("--seed", type=seed, help="random seed in [0, 2^63) (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--allow-change", action="store_true",
                   help="with --resume: adopt a change of the optimisation (--lr, an edited config.json, ...); "
                        "recorded in RUN/history.jsonl (the model, process, data and seed can never change)")
    t.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto", help="progress display")
    t.add_argument("--procs", type=procs_arg, default="auto",
                   help="data-parallel processes on this machine, run under torchrun (default auto: one per GPU; on a "
                        "CPU one, or 2 x 1 thread where that measured faster: the mnist and folder32 presets in "
                        "float32 without native bf16; a resumed run keeps its own)")


def put_budget(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """--steps or --minutes (each replaces the other) and --seed, into the `train` section of the overrides."""
    train = overrides.setdefault("train", {})
    if args.steps is not None:
        train.update(steps=args.steps, minutes=None)
    if args.minutes is not None:
        train.update(minutes=args.minutes, steps=None)
    if args.seed is not None:
        train["seed"] = args.seed
    if not train:
        del overrides["train"]


def resume_dir(args: argparse.Namespace, overrides: dict[str, Any], *also: str) -> Path:
    """The run directory to resume, after refusing --preset/--config (and `also`), any change of what the run is,
    and a change of its optimisation without --allow-change (training/drift.py)."""
    from ..training.drift import Change, check_changes

    if not args.out:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    given = [flag for flag in ("preset", "config", *also) if getattr(args, flag)]
    if given:
        raise ConfigError(f"--resume continues a run with its own config; drop {', '.join('--' + f for f in given)}")
    changes = [Change(f"{section}.{key}" if isinstance(values, dict) else section, "(the run's)", value)
               for section, values in overrides.items()
               for key, value in (values.items() if isinstance(values, dict) else [(section, values)])]
    check_changes(changes, args.allow_change, "the command line")
    return Path(args.out)


def default_run_dir(args: argparse.Namespace, name: str) -> Path:
    """--out, or runs/NAME-TIMESTAMP."""
    return Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def layered(args: argparse.Namespace, base: dict[str, Any], overrides: dict[str, Any], merge: Callable[..., Any],
            parse: Callable[[dict[str, Any]], Any], name: str) -> tuple[Any, Path, bool]:
    """A new run's config: the preset `base`, then --config, then the command line (`merge` layers them)."""
    from ..training.config import read_config_file

    if args.config:
        base = merge(base, read_config_file(args.config))
    cfg = parse(merge(base, overrides))
    return cfg, default_run_dir(args, cfg.preset or name), False


def launched(args: argparse.Namespace, run_dir: Path, cfg: Any = None, resume: bool = False) -> int | None:
    """With --procs resolving to more than one process outside a launcher: this same command in that many processes
    under torchrun (after the config `cfg` was checked here, so a bad one fails once), and its exit code; else None
    (train in this process)."""
    from .launch import relaunch, resolve_procs, under_launcher

    if under_launcher():
        return None
    choice = resolve_procs(args.procs, cfg, run_dir if resume else None)
    if choice.procs == 1:
        return None
    argv = list(args.argv)
    if not args.out:  # every process must write the same new run directory
        argv += ["--out", str(run_dir)]
    return relaunch(choice.procs, argv, args.threads, choice.reason)


def progress_mode(args: argparse.Namespace) -> bool | None:
    """--progress: None (a bar on a terminal, lines otherwise), True (bar) or False (lines)."""
    return None if args.progress == "auto" else args.progress == "bar"


def trained(command: str, run: Callable[[], Any], run_dir: Path) -> Any:
    """Run a training; an interrupt (SIGINT/SIGTERM, after its checkpoint) is re-raised with the resume command."""
    from ..errors import TrainingInterrupted

    try:
        return run()
    except TrainingInterrupted as e:
        raise TrainingInterrupted(f"{e}; resume with: diffusionlab {command} --resume --out {run_dir}",
                                  e.exit_code - 128, e.step, e.checkpoint) from None


def print_result(res: Any, *lines: str) -> None:
    """The end of a training command: step, loss, time, where everything is."""
    print(f"done: step {res.step}, loss {res.loss:.4f}, {res.elapsed_seconds / 60:.1f} min of training")
    if res.skipped_steps or res.rollbacks:
        print(f"warning: {res.skipped_steps} step(s) skipped for non-finite loss or gradient, {res.rollbacks} "
              f"rollback(s); see history.jsonl in the run directory")
    for line in lines:
        print(line)
    print(f"run directory: {res.run_dir}")
    print(f"checkpoint:    {res.checkpoint}")



__all__ = ["add_run_arguments", "default_run_dir", "launched", "layered", "print_result", "progress_mode", "put_budget", "resume_dir", "trained"]
