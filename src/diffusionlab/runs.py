"""A run directory on disk: its config, its newest checkpoint, and the model rebuilt from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .codecs import Codec, build_codec
from .denoiser import Denoiser
from .errors import CheckpointError
from .models import build_network
from .processes import Process
from .training.checkpoint import latest_checkpoint, load_checkpoint
from .training.config import RunConfig


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
    codec: Codec

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the network sees and the samplers draw (the codec's latent shape)."""
        m = self.config.model
        size = m["image_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (m["in_channels"], h, w)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this run generates (after decoding)."""
        return self.codec.image_shape(self.model_shape)


def load_run(run_dir: Path, checkpoint: Path | None = None, use_ema: bool = True) -> LoadedRun:
    """Rebuild the model of a run from its newest (or the given) checkpoint; EMA weights by default."""
    cfg = read_run_config(run_dir)
    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    ckpt = load_checkpoint(ckpt_path, with_optimizer=False)
    process = cfg.process.build()
    net = build_network(cfg.model)
    try:
        net.load_state_dict(ckpt.ema if use_ema else ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the model in config.json ({str(e).splitlines()[0][:100]})") from None
    net.eval()
    codec = build_codec(cfg.codec, Path(run_dir))
    return LoadedRun(cfg, process, net, process.denoiser(net), ckpt.step, ckpt_path, codec)
