"""`diffusionlab posthoc-ema`: choose the length of the weight average after training (EDM2's post-hoc EMA,
training/posthoc_ema.py), and optionally score each length by FID to pick one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .args import add_precision_flag, positive_int, seed, sigma_rel_list

MAX_FID_N = 50_000


def add_parser(sub: Any) -> None:
    """The `posthoc-ema` sub-command."""
    from ..sampling import SAMPLER_NAMES

    p = sub.add_parser("posthoc-ema", help="rebuild the EMA of any length from a run's snapshots (EDM2), and score it",
                       description="Rebuild the weight average of relative length sigma_rel (its width as a fraction "
                                   "of the training so far; EDM2's post-hoc EMA) from the snapshots a run trained "
                                   "with --posthoc-ema wrote, as a checkpoint folder for sample/evaluate "
                                   "--checkpoint. With --fid, score every length (and the run's own EMA) to pick one.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--sigma-rel", type=sigma_rel_list, required=True, metavar="S,S,...",
                   help="relative lengths to rebuild, e.g. 0.03,0.05,0.1,0.2 (each in (0, 0.2887])")
    p.add_argument("--step", type=positive_int, default=None,
                   help="the checkpoint step to rebuild at (default: the newest snapshot's)")
    p.add_argument("--fid", type=positive_int, default=None, metavar="N",
                   help="also score each rebuilt average and the run's own EMA: FID, KID, precision/recall of N "
                        "samples against the test split, beside the real-data floor")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=None, metavar="NAME",
                   help="sampler for --fid (default: the model's own)")
    p.add_argument("--steps", type=positive_int, default=None, help="its steps (default: the model's own)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the --fid samples (the same for every length)")
    add_precision_flag(p)


def run(args: argparse.Namespace) -> int:
    """`diffusionlab posthoc-ema`."""
    from ..runs import read_config_json
    from ..training.checkpoint import list_checkpoints
    from ..training.posthoc_ema import (
        OUTPUT_DIR,
        list_snapshots,
        reconstruct,
        write_checkpoint,
    )

    run_dir = Path(args.run_dir)
    read_config_json(run_dir)  # not a run directory, or a corrupt config: one line
    if args.fid is not None and args.fid > MAX_FID_N:
        raise ConfigError(f"--fid {args.fid} is more than {MAX_FID_N:,} samples")
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise ConfigError(f"{run_dir} has no EMA snapshots: train it with --posthoc-ema 0.05,0.1 (the sigma_rel of "
                          "the averages to track), then rebuild any length here")
    step = args.step if args.step is not None else snaps[-1].step
    checkpoints = dict(list_checkpoints(run_dir))
    if step not in checkpoints or step not in {s.step for s in snaps}:
        both = sorted(set(checkpoints) & {s.step for s in snaps})
        raise ConfigError(f"no checkpoint with an EMA snapshot at step {step} in {run_dir}; steps with both: "
                          f"{', '.join(map(str, both[-8:])) or 'none'}")
    if args.fid is not None:
        _check_sampler(run_dir, checkpoints[step], args)

    rows = []
    for sigma_rel in sorted(set(args.sigma_rel)):
        rec = reconstruct(run_dir, sigma_rel, step)
        folder = write_checkpoint(run_dir, rec)
        rows.append((rec, folder))
        print(f"sigma_rel {sigma_rel:.3f} (gamma {rec.gamma:6.2f}): profile fit error {100 * rec.fit_error:.2f}% "
              f"from {len(rec.sources)} averages in {rec.record()['snapshots']} snapshots -> {folder}")
    plot = _write_profiles_png(run_dir / OUTPUT_DIR / f"profiles-step_{step:08d}.png", [r for r, _ in rows])
    print(f"profiles: {plot}")
    print(f"use one:  diffusionlab sample {run_dir} --checkpoint {rows[0][1]}")
    if args.fid is not None:
        _score(run_dir, step, checkpoints[step], rows, args)
    return 0


def _check_sampler(run_dir: Path, checkpoint: Path, args: argparse.Namespace) -> None:
    """--sampler/--steps against the run's model, before any work."""
    from ..api import load_run

    r = load_run(run_dir, checkpoint, mixed_precision=args.mixed_precision)
    if not r.baseline:
        r.loaded.sampler_and_steps(args.sampler, args.steps)


def _score(run_dir: Path, step: int, checkpoint: Path, rows: list, args: argparse.Namespace) -> None:
    """FID etc. of the run's own EMA and of each rebuilt average, one table and RUN/posthoc_ema/fid-step_N.json."""
    from ..api import load_run
    from ..atomic import atomic_write_text
    from ..runs import read_config_json
    from ..training.posthoc_ema import OUTPUT_DIR

    cfg = dict(read_config_json(run_dir).get("train") or {})
    results: list[dict[str, Any]] = []
    own = (f"EMA decay {cfg.get('ema_decay')}" if cfg.get("ema_sigma_rel") is None
           else f"power EMA sigma_rel {cfg['ema_sigma_rel']}")
    candidates = [(f"{own} (the run's own)", checkpoint, None)]
    candidates += [(f"post-hoc sigma_rel {rec.sigma_rel:.3f}", folder, rec.sigma_rel) for rec, folder in rows]
    for label, folder, sigma_rel in candidates:
        r = load_run(run_dir, folder, mixed_precision=args.mixed_precision)
        q = r.evaluate(args.fid, sampler=args.sampler, steps=args.steps, seed=args.seed, progress=True)
        results.append({"weights": label, "sigma_rel": sigma_rel, "checkpoint": str(folder), **q})
        print(f"{label}: FID {q['fid']:.2f} (floor {q['floor']['fid']:.2f}), precision {q['precision']:.3f}, "
              f"recall {q['recall']:.3f}", flush=True)
    best = min(results, key=lambda x: x["fid"])
    print(f"lowest FID: {best['weights']} ({best['fid']:.2f} with {args.fid} samples, seed {args.seed})")
    out = run_dir / OUTPUT_DIR / f"fid-step_{step:08d}.json"
    atomic_write_text(out, json.dumps({"step": step, "n": args.fid, "sampler": args.sampler, "steps": args.steps,
                                       "seed": args.seed, "results": results}, indent=1, default=str))
    print(f"scores:   {out}")


def _write_profiles_png(path: Path, recs: list) -> Path:
    """The target profile of each length against its reconstruction from the snapshots (weight per update)."""
    from ..atomic import atomic_write_bytes
    from ..training.posthoc_ema import profiles_of
    from ..viz import figure_png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    taus = np.arange(1, recs[0].t + 1)
    for i, rec in enumerate(recs):
        target, got = profiles_of(rec, taus)
        ax.plot(taus, target, color=f"C{i}", lw=2, alpha=0.5, label=f"sigma_rel {rec.sigma_rel:.3f}: target")
        ax.plot(taus, got, color=f"C{i}", lw=1, ls="--", label=f"rebuilt (fit error {100 * rec.fit_error:.1f}%)")
    ax.set_xlabel("training update tau")
    ax.set_ylabel("weight of the weights after update tau")
    ax.set_title(f"Post-hoc EMA at update {recs[0].t}: power-function profiles (EDM2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_write_bytes(path, figure_png(fig))


__all__ = ["add_parser", "run"]
