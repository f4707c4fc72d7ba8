"""The latent codec of latent diffusion (Rombach et al. 2022, section 3): z = s * E(x), x = D(z / s).

E and D are a trained KL autoencoder (models/autoencoder.py, an `train-autoencoder` run); s = 1 / std(z) is the
scale factor estimated on its training data and stored with the autoencoder's checkpoints (LDM's `scale_factor`,
their section 4.3.2: unit-variance latents, so that a noise schedule built for data of variance ~1 fits them).
Training draws z from the posterior q(z | x), as LDM does; the trainer precomputes its mean and standard deviation
for the whole dataset once (`encode_dataset`), so a training step pays nothing for the encoder.

A latent diffusion run keeps its own copy of the autoencoder's weights (RUN/codec/autoencoder.safetensors, with
its sha256 in config.json): deleting or continuing the autoencoder run never changes a trained latent model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor

from ..data.dataset import to_model_range
from ..errors import CheckpointError, ConfigError
from ..models.autoencoder import AutoencoderConfig, AutoencoderKL

WEIGHTS = Path("codec") / "autoencoder.safetensors"  # inside a latent diffusion run
SECTION_KEYS = {"kind", "source", "checkpoint", "sha256", "scale_factor", "model"}


def read_weights(path: Path) -> bytes:
    """The bytes of a weights file, or a one-line error if it is missing."""
    if not path.is_file():
        raise CheckpointError(f"autoencoder weights missing: {path}")
    return path.read_bytes()


def load_autoencoder(model_cfg: dict[str, Any], data: bytes, where: Path) -> AutoencoderKL:
    """The autoencoder of `model_cfg` with the safetensors `data` (eval mode, frozen); one-line errors."""
    model = AutoencoderKL(AutoencoderConfig.from_dict(model_cfg))
    try:
        model.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"autoencoder weights {where} are corrupt or do not match its config "
                              f"({str(e).splitlines()[0][:100]})") from None
    return model.eval().requires_grad_(False)


class LatentTable:
    """The posterior mean and standard deviation of every training image (and of its mirror image, with flips)."""

    def __init__(self, codec: "AutoencoderCodec", images: Tensor, hflip: bool, batch_size: int = 128) -> None:
        self.codec = codec
        self.mean, self.std = self._moments(images, batch_size)
        self.flipped = self._moments(images.flip(3), batch_size) if hflip else None

    @torch.no_grad()
    def _moments(self, images: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        means, stds = [], []
        device = self.codec.device
        for start in range(0, len(images), batch_size):
            q = self.codec.model.encode(to_model_range(images[start : start + batch_size]).to(device))
            means.append(q.mean.float().cpu())
            stds.append(q.std.float().cpu())
        return torch.cat(means), torch.cat(stds)

    def batch(self, idx: Tensor, flip: Tensor | None, noise: Tensor | None) -> Tensor:
        """z = s (mean + std * noise) for images idx (their mirror images where flip)."""
        mean, std = self.mean[idx], self.std[idx]
        if flip is not None and self.flipped is not None:
            f = flip.view(-1, 1, 1, 1)
            mean, std = torch.where(f, self.flipped[0][idx], mean), torch.where(f, self.flipped[1][idx], std)
        z = mean if noise is None else mean + std * noise
        return self.codec.scale_factor * z


class AutoencoderCodec:
    """z = s * (mean + std * noise) of q(z | x); decode(z) = D(z / s). The x0 prediction is not clipped in latent space."""

    kind: ClassVar[str] = "autoencoder"
    x0_clip = None
    stochastic = True
    pixel_space = False

    def __init__(self, model: AutoencoderKL, scale_factor: float, section: dict[str, Any], weights: bytes) -> None:
        if not (scale_factor > 0 and scale_factor < float("inf")):
            raise CheckpointError(f"the autoencoder's latent scale factor must be a finite number > 0, got {scale_factor}")
        self.model, self.scale_factor, self.section, self._weights = model, float(scale_factor), section, weights

    @property
    def device(self) -> torch.device:
        """Where the autoencoder's weights are."""
        return next(self.model.parameters()).device

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(c, h, w) of the latents; a one-line error if the data is not what the autoencoder was trained on."""
        c = self.model.config
        if tuple(image_shape) != c.image_shape:
            raise ConfigError(f"the autoencoder ({self.section.get('source')}) encodes {c.image_shape[0]}-channel "
                              f"{c.image_shape[1]}x{c.image_shape[2]} images; this run's data is "
                              f"{image_shape[0]}-channel {image_shape[1]}x{image_shape[2]}")
        return c.latent_shape

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of the decoded images."""
        return self.model.config.image_shape

    @torch.no_grad()
    def encode(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """z = s (mean + std * noise) for pixels x in [-1, 1] (the posterior mean when noise is None)."""
        q = self.model.encode(x.to(self.device))
        return (self.scale_factor * q.sample(None if noise is None else noise.to(self.device))).to(x.device)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """D(z / s): pixels in about [-1, 1], on z's device."""
        return self.model.decode(z.to(self.device, torch.float32) / self.scale_factor).to(z.device)

    def encode_dataset(self, images: Tensor, hflip: bool) -> LatentTable:
        """The posterior moments of every image, computed once (see the module docstring)."""
        return LatentTable(self, images, hflip)

    def to(self, device: torch.device | str) -> "AutoencoderCodec":
        """The codec with the autoencoder on `device`."""
        self.model.to(device)
        return self

    def files(self) -> dict[str, bytes]:
        """The autoencoder's weights, to keep inside the run directory."""
        return {str(WEIGHTS): self._weights}

    def config(self) -> dict[str, Any]:
        """The run's `codec` section."""
        return dict(self.section)


def build_autoencoder_codec(section: dict[str, Any], run_dir: Path | None) -> AutoencoderCodec:
    """The codec of a `codec` section: the run's own copy of the weights if `run_dir` has one, else the source run's
    checkpoint; either way its sha256 must be the section's."""
    own = Path(run_dir) / WEIGHTS if run_dir is not None else None
    where = own if own is not None and own.is_file() else Path(section["source"]) / "checkpoints" / section["checkpoint"] / "ema.safetensors"
    data = read_weights(where)
    if hashlib.sha256(data).hexdigest() != section["sha256"]:
        raise CheckpointError(f"autoencoder weights {where} do not match the sha256 in the run's config (changed or "
                              f"corrupt)")
    return AutoencoderCodec(load_autoencoder(section["model"], data, where), float(section["scale_factor"]), dict(section), data)


__all__ = ["SECTION_KEYS", "WEIGHTS", "AutoencoderCodec", "LatentTable", "build_autoencoder_codec", "load_autoencoder",
           "read_weights"]
