"""The models diffusion is compared against (docs/maths.md section 9): GAN, VAE and normalizing flow, trained, sampled and
evaluated through the same run directories, loop, checkpoints and commands as the diffusion families.

`KINDS` is the one table of baseline families (config.json's "kind"); each entry is a `BaselineKind` (kind.py).
`train_baseline` trains one with the shared loop (training/loop.py); `load_baseline` rebuilds a trained one as a
`LoadedBaseline` that samples images and reports bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import from_model_range
from ..errors import CheckpointError, ConfigError
from ..training.checkpoint import latest_checkpoint, load_checkpoint
from ..training.loop import TrainResult, run_training
from .config import BaselineRunConfig
from .gan import GAN
from .kind import BaselineKind
from .nf import NormalizingFlow
from .vae import VAE

KINDS: dict[str, type[BaselineKind]] = {k.name: k for k in (GAN, VAE, NormalizingFlow)}


def train_baseline(cfg: BaselineRunConfig, run_dir: Path, resume: bool = False, progress: bool | None = None,
                   allow_change: bool = False) -> TrainResult:
    """Train (or resume) the baseline run in `run_dir` until its step or time budget is spent."""
    kind = KINDS[cfg.kind]
    if cfg.train.mixed_precision == "auto" and not kind.auto_bf16:
        cfg.train.mixed_precision = "no"  # the family's own choice (BaselineKind.auto_bf16), stored as such
    task = kind.task
    return run_training(cfg.train, Path(run_dir), lambda accelerator: task(cfg, Path(run_dir), accelerator),
                        resume=resume, progress=progress, allow_change=allow_change)


@dataclass
class LoadedBaseline:
    """A trained baseline ready to sample and to score: its config, family, network (eval mode) and checkpoint."""

    config: BaselineRunConfig
    kind: type[BaselineKind]
    net: torch.nn.Module
    step: int
    checkpoint: Path
    nonfinite: int = 0  # samples of the last `sample` call that were NaN or infinite (written as mid-grey)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it draws."""
        m = self.config.model
        size = m["image_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (m["in_channels"], h, w)

    @property
    def tokenizer(self) -> None:
        """A baseline takes no captions."""
        return None

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional run (None otherwise)."""
        return self.config.model.get("num_classes")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, y: Tensor | None = None, batch_size: int = 256, progress: bool = False,
               on_batch: Callable[[Tensor], None] | None = None) -> Tensor | None:
        """n images as uint8 (N, C, H, W), in batches of `batch_size` from one generator seeded by `seed` (the same
        seed and batch size give the same images); y: labels of a class-conditional run (default: classes in turn).
        With `on_batch`, each batch goes there instead of being kept (None is returned)."""
        if self.num_classes and y is None:
            y = torch.arange(n) % self.num_classes
        g = torch.Generator().manual_seed(seed)
        out = []
        self.nonfinite = 0
        for start in tqdm(range(0, n, batch_size), desc=f"sample {self.kind.name}", disable=not progress,
                          leave=False):
            b = min(batch_size, n - start)
            x = self.kind.sample(self.net, b, g, None if y is None else y[start : start + b])
            self.nonfinite += int((~torch.isfinite(x)).flatten(1).any(1).sum())  # e.g. a flow's inverse overflowing
            images = from_model_range(x)
            if on_batch is not None:
                on_batch(images)
            else:
                out.append(images)
        return None if on_batch is not None else torch.cat(out)

    @torch.no_grad()
    def bits_per_dim(self, images: Tensor, y: Tensor | None = None, seed: int = 0, batch_size: int = 256,
                     progress: bool = False) -> dict[str, Any]:
        """The family's NLL of uint8 images in bits/dim: mean, standard error, what it is (bound or exact)."""
        if self.kind.nll is None:
            raise ConfigError(f"a {self.kind.name} defines no likelihood: --nll does not apply (use --fid)")
        g = torch.Generator().manual_seed(seed)
        values = []
        for start in tqdm(range(0, len(images), batch_size), desc="nll", disable=not progress, leave=False):
            b = slice(start, start + batch_size)
            values.append(self.kind.bits_per_dim(self.net, images[b], None if y is None else y[b], g).double().cpu())
        bpd = torch.cat(values)
        return {"bits_per_dim": float(bpd.mean()), "std_error": float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1
                else float("nan"), "n_images": len(bpd), "what": self.kind.nll}


def read_baseline_config(config: dict[str, Any], where: Path) -> BaselineRunConfig:
    """A baseline run's config (the checkpoint's), with one-line errors."""
    if config.get("kind") not in KINDS:
        raise ConfigError(f"{where} is not a GAN, VAE or flow run")
    return BaselineRunConfig.from_dict(config)


def load_baseline(run_dir: Path, config: dict[str, Any], checkpoint: Path | None = None,
                  use_ema: bool = True) -> LoadedBaseline:
    """Rebuild a baseline from its newest (or the given) checkpoint and its trusted `config`; EMA weights by default."""
    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    cfg = read_baseline_config(config, run_dir)
    ckpt = load_checkpoint(ckpt_path, with_optimizer=False)
    kind = KINDS[cfg.kind]
    net = kind.network(cfg.model)
    try:
        net.load_state_dict(ckpt.ema if use_ema else ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the {cfg.kind} in its config "
                              f"({str(e).splitlines()[0][:100]})") from None
    return LoadedBaseline(cfg, kind, net.eval(), ckpt.step, ckpt_path)


__all__ = ["KINDS", "BaselineKind", "BaselineRunConfig", "LoadedBaseline", "load_baseline", "read_baseline_config",
           "train_baseline"]
