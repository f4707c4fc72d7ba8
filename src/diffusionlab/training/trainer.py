"""`train` and `train_autoencoder`: one run of a model kind, from its config to its last checkpoint.

The loop's bookkeeping (budget, progress, checkpoints, resume, EMA, Accelerate) is loop.py, the same for every
kind; what is trained in each step is the kind's task: diffusion.py for the Gaussian families, autoencoder.py for
latent diffusion's first stage.
"""

from __future__ import annotations

from pathlib import Path

from .autoencoder import AutoencoderTask
from .config import AutoencoderRunConfig, RunConfig
from .diffusion import DiffusionTask
from .loop import INIT_KEY, TrainResult, run_training


def train(cfg: RunConfig, run_dir: Path, resume: bool = False, progress: bool | None = None,
          allow_change: bool = False) -> TrainResult:
    """Train (or resume) the run in `run_dir` until its step or time budget is spent; resuming with another
    optimisation than the checkpoint's needs `allow_change` (training/drift.py)."""
    return run_training(cfg.train, Path(run_dir), lambda accelerator: DiffusionTask(cfg, Path(run_dir), accelerator, resume),
                        resume=resume, progress=progress, allow_change=allow_change)


def train_autoencoder(cfg: AutoencoderRunConfig, run_dir: Path, resume: bool = False,
                      progress: bool | None = None, allow_change: bool = False) -> TrainResult:
    """Train (or resume) the autoencoder run in `run_dir` until its step or time budget is spent."""
    return run_training(cfg.train, Path(run_dir), lambda accelerator: AutoencoderTask(cfg, Path(run_dir), accelerator),
                        resume=resume, progress=progress, allow_change=allow_change)


__all__ = ["INIT_KEY", "TrainResult", "train", "train_autoencoder"]
