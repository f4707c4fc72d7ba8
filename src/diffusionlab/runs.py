"""A run directory on disk: its config, its newest checkpoint, and the model rebuilt from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .denoiser import Denoiser
from .errors import CheckpointError, ConfigError
from .processes import NCSN, VESDE, VPSDE, FlowMatching, GaussianDiffusion, Process
from .training.checkpoint import latest_checkpoint, load_checkpoint
from .training.config import METHODS, ProcessConfig, RunConfig


def build_process(cfg: ProcessConfig) -> Process:
    """The training process named by `cfg.method`, with its settings (defaults where unset)."""
    if cfg.method == "ddpm":
        return GaussianDiffusion(cfg.schedule, cfg.T, cfg.prediction, cfg.variance, cfg.loss, cfg.vlb_weight)
    families = {"flow": FlowMatching, "ncsn": NCSN, "vpsde": VPSDE, "vesde": VESDE}
    if cfg.method not in families:
        raise ConfigError(f"unknown method {cfg.method!r}; choose from {', '.join(METHODS)}")
    return families[cfg.method](**cfg.settings())


def build_network(model_cfg: dict) -> torch.nn.Module:
    """The UNet described by a config's `model` section."""
    from .models import UNet, UNetConfig

    return UNet(UNetConfig.from_dict(model_cfg))


def read_run_config(run_dir: Path) -> RunConfig:
    """RUN/config.json as a RunConfig, with one-line errors."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"run config {path} is corrupt (not valid JSON)") from None


@dataclass
class LoadedRun:
    """A trained model ready to sample: config, process, network (eval mode) and its Denoiser."""

    config: RunConfig
    process: Process
    net: torch.nn.Module
    denoiser: Denoiser
    step: int
    checkpoint: Path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this run generates."""
        m = self.config.model
        size = m["image_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (m["in_channels"], h, w)


def load_run(run_dir: Path, checkpoint: Path | None = None, use_ema: bool = True) -> LoadedRun:
    """Rebuild the model of a run from its newest (or the given) checkpoint; EMA weights by default."""
    cfg = read_run_config(run_dir)
    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    ckpt = load_checkpoint(ckpt_path, with_optimizer=False)
    process = build_process(cfg.process)
    net = build_network(cfg.model)
    try:
        net.load_state_dict(ckpt.ema if use_ema else ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the model in config.json ({str(e).splitlines()[0][:100]})") from None
    net.eval()
    return LoadedRun(cfg, process, net, process.denoiser(net), ckpt.step, ckpt_path)
